// public/ssio.d.ts describes the client as it is used: a typical program
// type-checks cleanly, and misuse is reported.

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import ts from 'typescript';

import { ROOT, TEST_TIMEOUT } from './helpers.mjs';

const GOOD = `
import type { Socket, SocketOptions } from './ssio';
const options: SocketOptions = { transports: ['polling'], reconnectionDelay: 500, connectTimeout: 2000 };
const socket: Socket = io('http://127.0.0.1:3000', options);
socket.on('connect', () => console.log(socket.id, socket.connected, socket.transport));
socket.on('disconnect', (reason) => reason.toUpperCase());
socket.on('connect_error', (error) => error.message);
socket.on('user count', function (count) { this.emit('seen', count); });
socket.on('question', (q, reply) => reply?.({ answer: String(q) }));
socket.off('user count').off();
socket.onAny((event, data) => console.log(event.toUpperCase(), data)).offAny();
socket.prependAnyOutgoing(function (event) { this.emit('echo', event); }).listenersAnyOutgoing();
socket.emit('chat message', 'hi').close();
const global: Socket = io();
global.disconnect();
`;

// Each line is one mistake the declarations must catch.
const BAD = [
  `io().id = 'mine';`,
  `io({ transports: ['sse'] });`,
  `io('', { transports: ['websocket'] });`,
  `io().on('connect_error', (e: string) => e);`,
  `const t: 'sse' | 'polling' = io().transport;`,
  `io().onAny((event: number) => event);`,
];

async function diagnostics(source) {
  const dir = await mkdtemp(join(tmpdir(), 'ssio-types-'));
  try {
    await copyFile(join(ROOT, 'public', 'ssio.d.ts'), join(dir, 'ssio.d.ts'));
    const file = join(dir, 'use.ts');
    await writeFile(file, `import type {} from './ssio';\n${source}\nexport {};\n`);
    const program = ts.createProgram([file], {
      strict: true, noEmit: true, target: ts.ScriptTarget.ES2017, lib: ['lib.es2017.d.ts', 'lib.dom.d.ts'],
      types: [],
    });
    return ts.getPreEmitDiagnostics(program)
      .map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('public/ssio.d.ts type-checks typical use', { timeout: TEST_TIMEOUT }, async () => {
  assert.deepEqual(await diagnostics(GOOD), []);
});

test('public/ssio.d.ts rejects misuse', { timeout: TEST_TIMEOUT }, async () => {
  for (const line of BAD) {
    const found = await diagnostics(line);
    assert.equal(found.length, 1, `expected one error for ${line}, got ${JSON.stringify(found)}`);
  }
});

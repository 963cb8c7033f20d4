// Makes public/ssio.min.js from public/ssio.js, the page's copy of the
// client: `node tests/browser/minify.mjs` after `npm ci` in tests/browser.
// The options are fixed here, and minify.test.mjs runs this same transform,
// so the committed file is always exactly what it makes.

import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { transform } from 'esbuild';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SOURCE = join(ROOT, 'public', 'ssio.js');
export const MINIFIED = join(ROOT, 'public', 'ssio.min.js');

// The target bounds the syntax esbuild may write: nothing newer than
// es2017 (no `?.`, no `??`) goes into the page's copy of the client.
const OPTIONS = {
  minify: true,
  target: 'es2017',
  banner: '/* ssio.js, minified */',
};

/** The minified client for `source`, the text of public/ssio.js. */
export async function minify(source) {
  const { code } = await transform(source, OPTIONS);
  return code;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const code = await minify(await readFile(SOURCE, 'utf8'));
  await writeFile(MINIFIED, code);
  console.log(`wrote public/ssio.min.js: ${Buffer.byteLength(code)} bytes`);
}

/**
 * ssio browser client: socket.io-style events over Server-Sent Events, with
 * long-polling where a stream cannot get through.
 *
 * Load `/public/ssio.js` with a plain `<script>` tag; it defines the global
 * `io`. Or import the same client as a module:
 * `import { io } from '/public/ssio.mjs'`.
 */

/** A transport a socket can use. */
export type Transport = 'sse' | 'polling';

/**
 * Why a session ended, as passed to `disconnect` handlers. The server's
 * reasons arrive verbatim; the client adds "transport close" when it loses
 * the stream or a poll itself, and "client close" for `close()`.
 */
export type DisconnectReason =
  | 'transport close'
  | 'ping timeout'
  | 'client close'
  | 'server shutdown'
  | 'server disconnect'
  | 'slow reader'
  | (string & {});

/** Options for {@link io}. */
export interface SocketOptions {
  /**
   * Transports to try, in order of preference. Default `['sse', 'polling']`.
   * Once SSE has failed to get through on a page, that page polls from then
   * on.
   */
  transports?: Transport[];
  /** Reconnect after losing the session. Default `true`. */
  reconnection?: boolean;
  /** First reconnection delay in ms, doubled per failed attempt, with ±50% jitter. Default `1000`. */
  reconnectionDelay?: number;
  /** Longest reconnection delay in ms. Default `5000`. */
  reconnectionDelayMax?: number;
  /**
   * How long an SSE stream may stay open without delivering its `connect`
   * event (a buffering proxy holds it back) before the client falls back to
   * long-polling, in ms. Default `3000`.
   */
  connectTimeout?: number;
  /**
   * Sent to the server's connection middleware (`io.use_`) on every
   * connection, in the body of a `POST /handshake` (never in a URL).
   *
   * A function is called again for every connection. With JWT sessions it
   * returns `{ token }`, and is also called two thirds into each token's
   * life (`exp - iat`, less a second) for a fresh one, sent with `POST /refresh`; if it
   * gives none the server ends the session with `"token expired"`.
   */
  auth?:
    | Record<string, unknown>
    | (() => Record<string, unknown> | Promise<Record<string, unknown>>);
  /**
   * Share one stream with the other tabs of this origin (over HTTP/1.1,
   * where Web Locks and BroadcastChannel exist). Each tab keeps its own
   * session. Default `true`; a socket given `transports` never shares.
   */
  share?: boolean;
}

/** A `connect_error` from middleware carries its status and data. */
export interface ConnectError extends Error {
  /** 401 or 403 when middleware refused: the client then does not retry until `connect()`. */
  status?: number;
  /** The middleware's extra JSON, if any. */
  data?: unknown;
}

/** An acknowledgement callback: an error (timeout, no answer) or the server's answer. */
export type AckCallback = (this: Socket, err: Error | null, reply?: any) => void;

/** Events the client raises itself; a server can never send these. */
export interface ReservedEvents {
  /** A session started, first or after a reconnection; `socket.id` is set. */
  connect: () => void;
  /** The session ended. A reconnection follows unless `close()` was called or the reason is "server disconnect". */
  disconnect: (reason: DisconnectReason) => void;
  /** An attempt to start a session failed; a reconnection follows, unless middleware refused (401/403). */
  connect_error: (error: ConnectError) => void;
}

/**
 * Answers an event the server sent with `emit_with_ack`; the first call
 * counts, and the server gets `reply` as decoded JSON.
 */
export type Reply = (reply?: unknown) => void;

/**
 * A handler for an event from the server; `data` is the decoded JSON.
 * `reply` is there only when the server asked for an answer.
 */
export type Listener = (this: Socket, data: any, reply?: Reply) => void;

/**
 * A catch-all listener: the event's name and its decoded JSON data, and
 * for an incoming event that asks for an answer, the callback that gives it.
 */
export type AnyListener = (this: Socket, event: string, data: any, reply?: Reply) => void;

/** The handler type for an event name: reserved names have their own. */
export type HandlerFor<E extends string> = E extends keyof ReservedEvents ? ReservedEvents[E] : Listener;

/** One client session, re-established across reconnections. */
export interface Socket {
  /**
   * The session id, or `null` while not connected. Changes on every
   * reconnection. It is this client's credential (whoever holds it can
   * emit and close as this client), so keep it private; broadcasts name
   * senders by their public tag, its first 8 hex digits.
   */
  readonly id: string | null;
  /** Whether a session is live. */
  readonly connected: boolean;
  /**
   * The transport in use, or being tried; `null` until the first attempt
   * starts, once the script that called `io()` has run.
   */
  readonly transport: Transport | null;
  /**
   * After a `connect`: whether this connection resumed the previous session
   * (same id, rooms and data, every missed event delivered in order). False
   * after a reconnection means a fresh session: events may have been missed.
   */
  readonly recovered: boolean;

  /** Adds a handler. Returns the socket, for chaining. */
  on<E extends string>(event: E, fn: HandlerFor<E>): this;

  /** Removes one handler, every handler of an event, or (no arguments) every handler. */
  off<E extends string>(event?: E, fn?: HandlerFor<E>): this;

  /**
   * Adds a catch-all listener, called with the name and data of every event
   * from the server, before the event's own handlers. On a stream of its
   * own the socket then asks for every event framed as JSON (`frames=json`),
   * moving a live session there without a reconnection, so that events
   * without a handler reach it too.
   */
  onAny(fn: AnyListener): this;
  /** {@link Socket.onAny}, placed before the catch-all listeners already added. */
  prependAny(fn: AnyListener): this;
  /** Removes one catch-all listener, or (no argument) every one. */
  offAny(fn?: AnyListener): this;
  /** The catch-all listeners, in the order they are called. */
  listenersAny(): AnyListener[];

  /** Adds a listener called with the name and data of every event this socket sends, as it leaves. */
  onAnyOutgoing(fn: AnyListener): this;
  /** {@link Socket.onAnyOutgoing}, placed before the listeners already added. */
  prependAnyOutgoing(fn: AnyListener): this;
  /** Removes one outgoing listener, or (no argument) every one. */
  offAnyOutgoing(fn?: AnyListener): this;
  /** The outgoing listeners, in the order they are called. */
  listenersAnyOutgoing(): AnyListener[];

  /**
   * Sends an event to the server. `data` must survive `JSON.stringify`.
   * Events emitted while disconnected are sent, in order, on the next
   * `connect`.
   */
  emit(event: string, data?: unknown, ack?: AckCallback): this;

  /** `emit` whose callback fails with "operation has timed out" after `ms`. */
  timeout(ms: number): { emit(event: string, data: unknown, ack: AckCallback): Socket };

  /** Connects again (after a middleware refusal or `close()`). */
  connect(): this;
  /** The same as {@link Socket.connect}. */
  open(): this;

  /** Ends the session for good: no reconnection. */
  close(): this;
  /** The same as {@link Socket.close}. */
  disconnect(): this;
}

/**
 * Opens a socket to the ssio server at `url` (default: this page's origin).
 * The connection starts once the calling script has run, so listeners
 * added right after this call shape it.
 */
export declare function io(url?: string, options?: SocketOptions): Socket;

declare global {
  /** See {@link io}. */
  function io(url?: string, options?: SocketOptions): Socket;
}

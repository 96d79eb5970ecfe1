// Progress deadlines for connections. Uploads and downloads of many GB may take hours, so there is no
// deadline for a whole request (requestTimeout stays 0); instead a connection is cut when it stops moving,
// or moves too little, while the server waits on the client. A client that never reads a NAR it asked for
// pins the response's buffers and a descriptor; one that sends 10 bytes of its upload and stops, or sends
// a byte a second, pins a temp file too. Each is destroyed, which aborts the upload (its temp file is
// removed, nothing is stored) or the download.
//
// The server waits on the client when a request body is still arriving and the server is reading it (the
// socket is not paused by back-pressure from a slow store), or when a response has bytes the socket has
// not yet handed to the kernel. Time spent waiting on the server itself (a slow store, a lookup) never
// counts. While waiting on the client:
// - no byte read or written for `idleTimeoutMs` → cut;
// - fewer than `minBytesPerSecond` × `idleTimeoutMs` bytes moved over a window of `idleTimeoutMs` → cut
//   (trickling). A transfer at 100 KiB/s moves a hundred times the default minimum.
// Written bytes are counted as the client acknowledges them (the kernel's count, native/src/sockets.c):
// Node's own count moves only when the kernel takes more from a blocked writer, which it does once a
// third of its send buffer (up to 4 MiB) is free, so a client reading at 20 KiB/s would seem stalled for
// a minute at a time. Where the kernel's count is not available, Node's is used.
//
// One timer per server checks every connection with a few property reads, so the read path pays nothing
// per chunk: per request, the request and response are noted on their socket (`noteRequest`).
// Connections without a request yet are Node's (`headersTimeout`), as are idle keep-alive connections
// (`keepAliveTimeout`).
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { loadAddon } from '../util/native-addon.js';

interface SocketsAddon {
  /** Bytes the peer of TCP socket `fd` acknowledged, or -1 when unknown. */
  bytesAcked(fd: number): number;
}

const sockets = loadAddon('niche_sockets', 'native socket counters') as SocketsAddon;

/** Default of `idle-timeout`. */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
/** Default of `min-transfer-rate`, bytes per second: 60 KiB over the default minute. */
export const DEFAULT_MIN_TRANSFER_RATE = 1024;

export interface DeadlineOptions {
  /**
   * A TLS server: connections are watched from their handshake ('secureConnection', the socket requests
   * are read from), and HTTP/2 sessions not at all (their streams share the socket; see server.ts).
   */
  readonly secure?: boolean | undefined;
  /** No bytes moved for this long while waiting on the client: the connection is destroyed. */
  readonly idleTimeoutMs: number;
  /** Fewer bytes per second than this, averaged over `idleTimeoutMs`, while waiting on the client: destroyed. 0: off. */
  readonly minBytesPerSecond: number;
  /** Called for each connection cut, with the reason. */
  readonly onCut?: ((reason: 'idle' | 'slow', socket: Socket) => void) | undefined;
}

interface Watched {
  /** The server was waiting on the client when last checked (the marks below are set). */
  waiting: boolean;
  request: IncomingMessage | undefined;
  response: ServerResponse | undefined;
  /** Bytes moved when last seen to change, and when. */
  moved: number;
  movedAt: number;
  /** Start of the current rate window, and bytes moved then. */
  windowAt: number;
  windowMoved: number;
}

/** How often connections are checked: a tenth of the idle timeout, between 20 ms and 1 s. */
export function checkIntervalMs(idleTimeoutMs: number): number {
  return Math.min(1000, Math.max(20, Math.floor(idleTimeoutMs / 10)));
}

export interface ConnectionDeadlines {
  /** Notes the request being served on its socket; called once per request, on the hot path. */
  noteRequest(request: IncomingMessage, response: ServerResponse): void;
  /** Stops checking (on server close). */
  stop(): void;
}

/** The socket's file descriptor, or -1 (Node does not document it, but has had it for a decade). */
function fdOf(socket: Socket): number {
  const fd = (socket as unknown as { readonly _handle?: { readonly fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/** Bytes read from the client, and written bytes the client acknowledged (or the kernel took). */
function movedBytes(socket: Socket): number {
  const fd = fdOf(socket);
  const acked = fd >= 0 ? sockets.bytesAcked(fd) : -1;
  return socket.bytesRead + (acked >= 0 ? acked : socket.bytesWritten - socket.writableLength);
}

function waitingOnClient(socket: Socket, watched: Watched): boolean {
  const request = watched.request;
  if (request !== undefined && !request.complete && !request.destroyed && !socket.isPaused()) return true;
  const response = watched.response;
  return response !== undefined && !response.writableFinished && socket.writableLength > 0;
}

export function watchConnections(server: Server, options: DeadlineOptions): ConnectionDeadlines {
  const { idleTimeoutMs, minBytesPerSecond } = options;
  const minWindowBytes = (minBytesPerSecond * idleTimeoutMs) / 1000;
  const watched = new Map<Socket, Watched>();
  server.on(options.secure === true ? 'secureConnection' : 'connection', (socket: Socket) => {
    if ((socket as Partial<Pick<TLSSocket, 'alpnProtocol'>>).alpnProtocol === 'h2') return;
    const now = Date.now();
    watched.set(socket, {
      waiting: false,
      request: undefined,
      response: undefined,
      moved: 0,
      movedAt: now,
      windowAt: now,
      windowMoved: 0,
    });
    socket.once('close', () => watched.delete(socket));
  });

  const cut = (socket: Socket, reason: 'idle' | 'slow'): void => {
    watched.delete(socket);
    options.onCut?.(reason, socket);
    // A reset, not a FIN: the kernel drops what it still holds for the client at once.
    socket.resetAndDestroy();
  };

  const check = (): void => {
    const now = Date.now();
    for (const [socket, state] of watched) {
      if (socket.destroyed) continue;
      if (!waitingOnClient(socket, state)) {
        // Waiting on the server, or idle between requests: the deadlines start again when it waits.
        state.waiting = false;
        continue;
      }
      const moved = movedBytes(socket);
      if (!state.waiting) {
        state.waiting = true;
        state.moved = moved;
        state.movedAt = now;
        state.windowAt = now;
        state.windowMoved = moved;
        continue;
      }
      if (moved !== state.moved) {
        state.moved = moved;
        state.movedAt = now;
      } else if (now - state.movedAt >= idleTimeoutMs) {
        cut(socket, 'idle');
        continue;
      }
      if (now - state.windowAt >= idleTimeoutMs) {
        if (moved - state.windowMoved < minWindowBytes) {
          cut(socket, 'slow');
          continue;
        }
        state.windowAt = now;
        state.windowMoved = moved;
      }
    }
  };
  const timer = setInterval(check, checkIntervalMs(idleTimeoutMs));
  timer.unref();
  server.once('close', () => {
    clearInterval(timer);
  });

  return {
    noteRequest(request, response) {
      // HTTP/2: request.socket is a stand-in for the session's socket, which is not watched.
      if (request.httpVersionMajor === 2) return;
      const state = watched.get(request.socket);
      if (state === undefined) return;
      state.request = request;
      state.response = response;
    },
    stop() {
      clearInterval(timer);
    },
  };
}

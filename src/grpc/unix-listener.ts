/**
 * The SDS Unix socket, listening before the gRPC server behind it exists. Envoy retries a refused SDS connection
 * with a jittered exponential backoff (up to 30 s by default), so every attempt it makes before the socket exists
 * can cost it up to its next backoff interval. The agent therefore listens first, with nothing but node:net loaded,
 * and the kernel and this module hold the connections that come in (unread) until the server is ready for them.
 * This module stays free of grpc-js so that listening costs no module loading.
 */
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { dirname, resolve } from 'node:path';
import { CitadelError } from '../errors.js';

// sun_path holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES = 107;

/** True when something accepts connections on the socket at `path`. */
function socketIsLive(path: string): Promise<boolean> {
  return new Promise((resolveLive) => {
    const socket = connect({ path });
    socket.once('connect', () => {
      socket.destroy();
      resolveLive(true);
    });
    socket.once('error', () => resolveLive(false));
  });
}

/**
 * Prepares `path` for binding: creates the parent directories, removes a stale socket.
 * @throws CitadelError CONFIG_INVALID when the path is too long, is not a socket, or a live server holds it.
 */
export async function prepareSocketPath(path: string): Promise<string> {
  const absolute = resolve(path);
  const chosen = Buffer.byteLength(absolute) <= MAX_SOCKET_PATH_BYTES ? absolute : path;
  if (Buffer.byteLength(chosen) > MAX_SOCKET_PATH_BYTES) {
    throw new CitadelError('CONFIG_INVALID', `SDS socket path is longer than ${MAX_SOCKET_PATH_BYTES} bytes: ${path}`);
  }
  await mkdir(dirname(absolute), { recursive: true });
  const stat = await lstat(absolute).catch(() => undefined);
  if (stat) {
    if (!stat.isSocket()) throw new CitadelError('CONFIG_INVALID', `SDS socket path exists and is not a socket: ${path}`);
    if (await socketIsLive(chosen)) {
      throw new CitadelError('CONFIG_INVALID', `another server is listening on the SDS socket ${path}`);
    }
    await unlink(absolute);
  }
  return chosen;
}

/** A listening Unix socket whose connections go to whoever calls serve(); until then they wait, unread. */
export interface UnixListener {
  /** The path bound (absolute unless that was too long for sun_path). */
  readonly socketPath: string;
  /** Hands every held and every later connection to `onConnection`. Once only. */
  serve(onConnection: (socket: Socket) => void): void;
  /**
   * Stops listening, destroys connections nobody took, removes the socket file. Connections already handed over
   * are left to their taker. Idempotent.
   */
  close(): Promise<void>;
}

/**
 * Listens on `path` with mode 0666, so Envoy (another uid in the same pod) can connect.
 * @throws CitadelError CONFIG_INVALID (see prepareSocketPath; also when binding fails).
 */
export async function listenUnixSocket(path: string): Promise<UnixListener> {
  const socketPath = await prepareSocketPath(path);
  const held: Socket[] = [];
  let handler: ((socket: Socket) => void) | undefined;
  // pauseOnConnect: nothing is read before the gRPC server takes the socket, so its HTTP/2 session starts at byte 0.
  // Reading resumes only on the next tick, after the taker (http2) has taken the socket's handle over.
  const hand = (socket: Socket, to: (socket: Socket) => void) => {
    socket.resume();
    to(socket);
  };
  const forget = function (this: Socket) {
    held.splice(held.indexOf(this), 1);
  };
  const server = createServer({ pauseOnConnect: true }, (socket) => {
    if (handler) return hand(socket, handler);
    held.push(socket);
    socket.once('close', forget);
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', (err) => reject(new CitadelError('CONFIG_INVALID', `cannot listen on the SDS socket ${path}`, err.message, { cause: err })));
    server.listen(socketPath, () => resolveListen());
  });
  try {
    await chmod(resolve(socketPath), 0o666);
  } catch (err) {
    server.close();
    throw new CitadelError('CONFIG_INVALID', `cannot make the SDS socket ${path} accessible`, (err as Error).message, { cause: err });
  }
  let closing: Promise<void> | undefined;
  return {
    socketPath,
    serve(onConnection) {
      if (handler) throw new Error('UnixListener.serve: already serving');
      handler = onConnection;
      for (const socket of held.splice(0)) {
        socket.off('close', forget);
        hand(socket, onConnection);
      }
    },
    close() {
      closing ??= (async () => {
        // server.close() calls back only once every connection has ended, handed-over ones included: not awaited.
        server.close();
        for (const socket of held.splice(0)) socket.destroy();
        await unlink(resolve(socketPath)).catch(() => undefined);
      })();
      return closing;
    },
  };
}

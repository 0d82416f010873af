/**
 * How the typed clients reach a secured mesh: TLS material (a CA to verify
 * the servers, a client certificate for mutual TLS) and a bearer token sent
 * as `authorization: Bearer <token>` on every call.
 */
import * as grpc from '@grpc/grpc-js';
import { channelCredentials, channelOptions, type TlsMaterial } from '../grpc/index.js';

export interface ClientSecurity {
  /** null or absent: plaintext. */
  tls?: TlsMaterial | null;
  /** Sent as a bearer token on every call; absent: none. */
  token?: string;
  /** Name the server's certificate must carry, when not the address's host. */
  serverName?: string;
}

/** What a client constructor takes besides its address. */
export interface ClientOptions extends ClientSecurity {
  /** Deadline of each call in ms. */
  timeoutMs?: number;
}

let defaults: ClientSecurity = {};

/**
 * Sets the security every client built afterwards uses when its options
 * leave it out. The CLI calls this once with its global flags, so each of
 * its commands reaches a secured mesh without passing credentials around;
 * services pass theirs explicitly instead.
 */
export function setClientDefaults(s: ClientSecurity): void {
  defaults = { ...s };
}

/** An interceptor that adds `authorization: Bearer <token>` to every call. */
export function bearerInterceptor(token: string): grpc.Interceptor {
  const value = `Bearer ${token}`;
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', value);
        next(metadata, listener);
      },
    });
}

/** Channel credentials and options for a client with `o`'s security (or the defaults). */
export function channelSetup(o: ClientSecurity, maxMessageBytes: number): { credentials: grpc.ChannelCredentials; options: grpc.ClientOptions } {
  const tls = o.tls !== undefined ? o.tls : defaults.tls;
  const token = o.token !== undefined ? o.token : defaults.token;
  const options: grpc.ClientOptions = { ...channelOptions(maxMessageBytes) };
  if (token) options.interceptors = [bearerInterceptor(token)];
  const serverName = o.serverName !== undefined ? o.serverName : defaults.serverName;
  if (serverName) options['grpc.ssl_target_name_override'] = serverName;
  return { credentials: channelCredentials(tls ?? null), options };
}

/** Splits a constructor's second argument (a timeout, as before, or options). */
export function clientOptions(o: number | ClientOptions | undefined, defaultTimeoutMs: number): ClientOptions & { timeoutMs: number } {
  const opts = typeof o === 'number' ? { timeoutMs: o } : (o ?? {});
  return { ...opts, timeoutMs: opts.timeoutMs ?? defaultTimeoutMs };
}

import * as grpc from '@grpc/grpc-js';
import { KEEPALIVE } from './server.js';

/** Channel options for clients inside the mesh (match the servers' keepalive). */
export function channelOptions(maxMessageBytes: number): grpc.ChannelOptions {
  return {
    'grpc.max_receive_message_length': maxMessageBytes,
    'grpc.max_send_message_length': maxMessageBytes,
    ...KEEPALIVE,
  } as grpc.ChannelOptions;
}

/** A deadline `ms` from now, for CallOptions. */
export function deadlineIn(ms: number): Date {
  return new Date(Date.now() + ms);
}

/** Identity codecs: the message is handed over as serialized bytes. */
export const rawBytes = {
  serialize: (b: Buffer): Buffer => b,
  deserialize: (b: Buffer): Buffer => b,
};

/** A generated client's unary method (request, metadata, options, callback). */
export type UnaryMethod<Req, Res> = (
  req: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  cb: (err: grpc.ServiceError | null, res?: Res) => void,
) => grpc.ClientUnaryCall;

/** Calls a generated unary client method and returns a promise of its response. */
export function call<Req, Res>(
  method: UnaryMethod<Req, Res>,
  self: grpc.Client,
  req: Req,
  options: { timeoutMs?: number; metadata?: grpc.Metadata } = {},
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(self, req, options.metadata ?? new grpc.Metadata(), { deadline: deadlineIn(options.timeoutMs ?? 10_000) }, (err, res) =>
      err ? reject(err) : resolve(res as Res),
    );
  });
}

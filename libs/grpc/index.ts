/** gRPC helpers shared by every service: servers, health, reflection, handlers, clients. */
export { createGrpcServer, listen, shutdownServer, addHealthAndReflection, KEEPALIVE, type Health, type ServerOptions } from './server.js';
export { unary, clientStream, type CallContext } from './handler.js';
export { channelOptions, deadlineIn, rawBytes, call, type UnaryMethod } from './client.js';
export { FrameCoalescer } from './frame-coalescer.js';

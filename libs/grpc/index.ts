/** gRPC helpers shared by every service: servers, health, reflection, handlers, clients. */
export { createGrpcServer, listen, shutdownServer, addHealthAndReflection, KEEPALIVE, type Health, type ServerOptions } from './server.js';
export { unary, clientStream, guarded, type CallContext } from './handler.js';
export { AccessPolicy, tokenHash, isLoopbackHost, ROLES, SUBJECT_RE, type Role, type Guard } from './access.js';
export { MANAGEMENT_ROLES, rpcRole, fieldRole, rolesTableMarkdown, type RoleRule, type RoleNeeded, type ManagedService } from './management-roles.js';
export { readServerTls, readClientTls, serverTlsOf, serverCredentials, channelCredentials, peerCredentials, peerTls, type TlsMaterial, type TlsFiles } from './tls.js';
export { SERVICE_URI_PREFIX, serviceNameIn, ownServiceName, requireServiceCertificate, servicePeerCheck, peerGuarded, type PeerCheck } from './service-identity.js';
export { diagnoseTls, tlsFailureOf, certificateTimeProblem, type TlsFailure, type TlsFailureKind, type TlsProbe } from './tls-diagnosis.js';
export { channelOptions, deadlineIn, rawBytes, call, type UnaryMethod } from './client.js';
export { FrameCoalescer, linkMessageBytes, LINK_HEADROOM_BYTES } from './frame-coalescer.js';
export { serveRawUnary, serveRawPath, acceptGrpcStream, respondGrpcError, encodeGrpcMessage, frameInPlace, frameCopy, parseGrpcTimeout, GRPC_PREFIX_BYTES, type RawUnaryHandler, type RawReply, type RawHeaders, type RawLoad } from './raw-unary.js';

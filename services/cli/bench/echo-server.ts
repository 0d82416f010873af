/**
 * The transport floor for `infermesh bench`: a bare grpc-js server that
 * answers ModelInfer by echoing the request bytes. Same path, same payload,
 * same grpc-js as the mesh, no work.
 */
import * as grpc from '@grpc/grpc-js';

const port = Number(process.argv[process.argv.indexOf('--port') + 1] ?? 0);
const server = new grpc.Server({ 'grpc.max_concurrent_streams': 1000 } as grpc.ServerOptions);
server.addService(
  {
    ModelInfer: {
      path: '/inference.GRPCInferenceService/ModelInfer',
      requestStream: false,
      responseStream: false,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    },
  } as grpc.ServiceDefinition,
  { ModelInfer: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request) },
);
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
  if (err) throw err;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', grpcPort: bound })}\n`);
});
process.once('SIGTERM', () => server.forceShutdown());
process.once('SIGINT', () => server.forceShutdown());

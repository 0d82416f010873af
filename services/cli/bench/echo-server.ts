/**
 * The transport floor for `infermesh bench`: a bare grpc-js server that
 * answers ModelInfer by echoing the request bytes. Same path, same payload,
 * same grpc-js as the mesh, no work. With `--raw`, the echo is served off
 * the raw HTTP/2 streams (serveRawUnary) the way the router and replicas
 * serve ModelInfer: the floor of the path the mesh actually takes.
 */
import * as grpc from '@grpc/grpc-js';
import { frameCopy, serveRawUnary } from '../../../libs/grpc/raw-unary.js';
import { oip } from '../../../libs/proto/index.js';

const MODEL_INFER = oip.GRPCInferenceServiceService.modelInfer.path;

const port = Number(process.argv[process.argv.indexOf('--port') + 1] ?? 0);
const server = new grpc.Server({ 'grpc.max_concurrent_streams': 1000 } as grpc.ServerOptions);
server.addService(
  {
    ModelInfer: {
      path: MODEL_INFER,
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
  if (process.argv.includes('--raw') && !serveRawUnary(server, MODEL_INFER, (req, _h, _d, reply) => (reply(0, '', frameCopy(req)), null), { maxMessageBytes: 4 << 20 })) throw new Error('raw echo unavailable');
  process.stdout.write(`${JSON.stringify({ msg: 'listening', grpcPort: bound })}\n`);
});
process.once('SIGTERM', () => server.forceShutdown());
process.once('SIGINT', () => server.forceShutdown());

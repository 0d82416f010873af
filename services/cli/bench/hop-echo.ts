/**
 * The other end of `infermesh bench`'s process hop floor (hop-floor.ts): a
 * bare loopback socket that answers each length-prefixed message with the
 * same bytes. No HTTP/2, no protobuf, no work.
 */
import net from 'node:net';
import { frameCopy } from '../../../libs/grpc/raw-unary.js';
import { GrpcMessageReader } from '../../../libs/wire/message-reader.js';

const server = net.createServer((sock) => {
  sock.setNoDelay(true);
  const sink = {
    stopped: false,
    declared(_flag: number, length: number): boolean {
      if (length <= 1 << 20) return true;
      sink.stopped = true;
      sock.destroy();
      return false;
    },
    message: (m: Buffer) => sock.write(frameCopy(m)),
  };
  const reader = new GrpcMessageReader(sink);
  sock.on('data', (chunk: Buffer) => reader.push(chunk));
  sock.on('error', () => sock.destroy());
});

server.listen(0, '127.0.0.1', () => {
  const a = server.address() as net.AddressInfo;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', grpcPort: a.port })}\n`);
});
process.once('SIGTERM', () => process.exit(0));
process.once('SIGINT', () => process.exit(0));

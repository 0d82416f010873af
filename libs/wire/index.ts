/** Protobuf wire format by hand for the data plane's hot messages (varint.ts) and the Runtime link's frames (link-frames.ts). */
export * from './varint.js';
export * from './link-frames.js';
export * from './message-reader.js';

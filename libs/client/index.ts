/** Typed TypeScript clients for the mesh: OIP inference, registry management, monitor queries. */
export { RegistryApi } from './registry.js';
export { InferenceApi, buildInferRequest, decodeOutputs, type InferenceApiOptions, type InputTensor, type OutputTensor, type InferOptions } from './inference.js';
export { MonitorApi } from './monitor.js';
export { setClientDefaults, bearerInterceptor, channelSetup, type ClientSecurity, type ClientOptions } from './security.js';

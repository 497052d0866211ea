export { NbdClient, type Extent, type NbdAddress, type NbdConnectOptions } from './client';
export { NbdError, NbdErrorCode } from './errors';
export type { ExportInfo } from './handshake';
export { AllocationFlag, DIRTY_FLAG, TransmissionFlag } from './protocol';

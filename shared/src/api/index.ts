// The hub's REST contract, exported from the package as the namespace `api`.
export * from './schemas';
export * from './routes';

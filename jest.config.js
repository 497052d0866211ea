// One jest run, four projects: fast unit tests beside the code (and under test/unit those that
// join services, in-process with no servers); integration suites under
// test/integration and end-to-end suites under test/e2e, which share real NATS and MariaDB
// servers started once (see test/support/global-setup.ts; the first project's setup starts them,
// the next finds their URLs in the environment); the chaos suite under test/chaos, which starts
// and restarts servers of its own.
const swc = [
  '@swc/jest',
  {
    jsc: {
      parser: { syntax: 'typescript', decorators: true },
      transform: { legacyDecorator: true, decoratorMetadata: true },
      target: 'es2022',
    },
    module: { type: 'commonjs' },
  },
];

const shared = {
  transform: { '^.+\\.ts$': swc },
  moduleNameMapper: {
    '^@tidemark/shared$': '<rootDir>/shared/src/index.ts',
    '^@tidemark/shared/(.*)$': '<rootDir>/shared/src/$1',
    '^@tidemark/ledger/(.*)$': '<rootDir>/services/ledger/src/$1',
    '^@tidemark/hub/(.*)$': '<rootDir>/services/hub/src/$1',
    '^@tidemark/cli/(.*)$': '<rootDir>/services/cli/src/$1',
    '^@tidemark/backup-client/(.*)$': '<rootDir>/services/backup-client/src/$1',
    '^@tidemark/appliance-runner/(.*)$': '<rootDir>/services/appliance-runner/src/$1',
  },
  testEnvironment: 'node',
};

module.exports = {
  // Per-project testTimeout is not applied by jest 30 when several projects run; set it here.
  testTimeout: 60000,
  projects: [
    {
      ...shared,
      displayName: 'unit',
      testMatch: [
        '<rootDir>/shared/src/**/*.test.ts',
        '<rootDir>/services/*/src/**/*.test.ts',
        '<rootDir>/test/unit/**/*.test.ts',
      ],
    },
    {
      ...shared,
      displayName: 'integration',
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      globalSetup: '<rootDir>/test/support/global-setup.ts',
      globalTeardown: '<rootDir>/test/support/global-teardown.ts',
      testTimeout: 60000,
    },
    {
      ...shared,
      displayName: 'e2e',
      testMatch: ['<rootDir>/test/e2e/**/*.test.ts'],
      globalSetup: '<rootDir>/test/support/global-setup.ts',
      globalTeardown: '<rootDir>/test/support/global-teardown.ts',
    },
    {
      // Starts and restarts servers of its own.
      ...shared,
      displayName: 'chaos',
      testMatch: ['<rootDir>/test/chaos/**/*.test.ts'],
    },
  ],
};

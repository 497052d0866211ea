import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';

const sharedDeepImport = {
  group: ['@tidemark/shared/*'],
  message: "Import from '@tidemark/shared': its public names are listed in shared/src/index.ts.",
};

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '.tidemark-tmp/**', 'test/bench/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: {
        require: 'readonly',
        module: 'writable',
        process: 'readonly',
        console: 'readonly',
        __dirname: 'readonly',
      },
    },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-restricted-syntax': [
        'error',
        {
          selector: 'ThrowStatement > Literal',
          message: 'Throw an Error subclass, never a string.',
        },
      ],
    },
  },
  {
    // One way into shared/: its listed public face (shared/src/index.ts), never a file of it.
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', { patterns: [sharedDeepImport] }],
    },
  },
  {
    // One REST contract, in shared/src/api: the CLI and the hub's HTTP layer take their schemas
    // from it and write none of their own (zod's types stay allowed; tests may build schemas).
    files: ['services/cli/src/**/*.ts', 'services/hub/src/http/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [sharedDeepImport],
          paths: [
            {
              name: 'zod',
              allowTypeImports: true,
              message: "Take the schema from @tidemark/shared's `api` (shared/src/api).",
            },
          ],
        },
      ],
    },
  },
  prettier,
);

import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

// Dependency direction (../shared/design.md): pki <- ca, agent, controllers <- kube, grpc adapters <- cli.
// The domain and src/grpc never import each other: the domain defines its service in plain types, src/grpc adapts
// any service of that shape to grpc-js, src/cli joins the two (docs/development.md).
const nodeIo = ['fs', 'net', 'http', 'http2', 'https', 'tls', 'child_process', 'dgram', 'dns', 'os', 'timers', 'timers/promises', 'worker_threads'];
const ioModules = nodeIo.flatMap((m) => [m, `node:${m}`, `${m}/*`, `node:${m}/*`]);
const restrict = (patterns, message) => patterns.map((group) => ({ group: [group], message }));
const domain = ['agent', 'authz', 'ca', 'controllers'];
const grpcImportsNoDomain = restrict(domain.map((d) => `../${d}/*`), 'src/grpc adapts plain service shapes and imports no domain code (src/agent, src/authz, src/ca, src/controllers); src/cli joins them.');
const noGrpcAdapters = restrict(['./grpc/*', '../grpc/*', '../../grpc/*'], 'The domain defines its service in plain types and never imports src/grpc; src/cli joins the two.');
// prom-client's index loads default metrics, @opentelemetry/api, cluster and pushgateway: ~115 ms and more per start.
const promIndex = { group: ['prom-client'], allowTypeImports: true, message: 'Import the metric classes from src/prom.ts.' };

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: globals.node },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/kube/**', 'src/cli/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [...restrict(['@kubernetes/*'], 'Only src/kube talks to Kubernetes.'), promIndex] }],
    },
  },
  {
    files: ['src/kube/**/*.ts', 'src/cli/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [promIndex] }],
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/grpc/**', 'src/cli/**', 'src/kube/**', 'src/pki/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [
        ...restrict(['@kubernetes/*'], 'Only src/kube talks to Kubernetes.'),
        ...restrict(['@grpc/*'], 'Only src/grpc imports gRPC.'),
        ...noGrpcAdapters,
        promIndex,
      ] }],
    },
  },
  {
    files: ['src/grpc/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [
        ...restrict(['@kubernetes/*'], 'Only src/kube talks to Kubernetes.'),
        ...grpcImportsNoDomain,
        promIndex,
      ] }],
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/config/**', 'src/cli/**'],
    rules: {
      'no-restricted-properties': ['error', { object: 'process', property: 'env', message: 'Config is read once, in src/config.' }],
    },
  },
  // Last, so these rules win over the src/** blocks above.
  {
    files: ['src/pki/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: ioModules.map((name) => ({ name, message: 'src/pki is pure: no I/O.' })),
        patterns: [
          ...restrict(['@kubernetes/*', '@grpc/*', 'pino', 'prom-client'], 'src/pki is pure: no Kubernetes, gRPC, logging or metrics.'),
          { group: ['../*', '!../errors.js'], message: 'src/pki is pure: it imports only itself and ../errors.js; time is passed in.' },
        ],
      }],
      'no-restricted-properties': ['error',
        { object: 'Date', property: 'now', message: 'src/pki never reads the clock: take `now` as an argument.' },
        { object: 'performance', property: 'now', message: 'src/pki never reads the clock.' },
      ],
      'no-restricted-syntax': ['error',
        { selector: "NewExpression[callee.name='Date'][arguments.length=0]", message: 'src/pki never reads the clock: take `now` as an argument.' },
        { selector: "MemberExpression[object.name='process']", message: 'src/pki reads no environment or process state.' },
      ],
    },
  },
);

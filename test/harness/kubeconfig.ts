/** Kubeconfig files for the test control plane: one cluster, one user (client certificate or bearer token). */
import fs from 'node:fs';

export type KubeconfigUser =
  | { readonly token: string }
  | { readonly clientCertificatePem: string; readonly clientKeyPem: string };

export interface KubeconfigOptions {
  server: string;
  caPem: string;
  userName: string;
  user: KubeconfigUser;
  namespace?: string;
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

/** Renders a kubeconfig (YAML) with the credentials inline, so the file alone is enough to connect. */
export function renderKubeconfig(opts: KubeconfigOptions): string {
  const user = 'token' in opts.user
    ? [`    token: ${opts.user.token}`]
    : [`    client-certificate-data: ${b64(opts.user.clientCertificatePem)}`, `    client-key-data: ${b64(opts.user.clientKeyPem)}`];
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: citadel-test',
    '  cluster:',
    `    server: ${opts.server}`,
    `    certificate-authority-data: ${b64(opts.caPem)}`,
    'users:',
    `- name: ${JSON.stringify(opts.userName)}`,
    '  user:',
    ...user,
    'contexts:',
    '- name: citadel-test',
    '  context:',
    '    cluster: citadel-test',
    `    user: ${JSON.stringify(opts.userName)}`,
    `    namespace: ${opts.namespace ?? 'default'}`,
    'current-context: citadel-test',
    '',
  ].join('\n');
}

/** Writes a kubeconfig readable only by us (it holds a credential). */
export function writeKubeconfig(file: string, opts: KubeconfigOptions): string {
  fs.writeFileSync(file, renderKubeconfig(opts), { mode: 0o600 });
  return file;
}

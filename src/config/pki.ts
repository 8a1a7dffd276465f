/** The flags of `citadel pki create-ca | inspect | revoke`; src/cli/pki.ts does the work. */
import { CRL_REASONS, KEY_TYPES, validateTrustDomain, type CrlReason, type KeyType } from '../pki/index.js';
import { flag, parse } from './flags.js';

export const createCaFlags = {
  out: flag({ name: 'out', help: 'Directory to write root-cert.pem, ca-cert.pem, ca-key.pem, cert-chain.pem (and root-key.pem for a new root).', parse: parse.string }),
  trustDomain: flag({ name: 'trust-domain', env: 'TRUST_DOMAIN', default: 'cluster.local', help: 'Trust domain: the spiffe://<trust-domain> URI SAN of both CA certificates.', parse: validateTrustDomain }),
  keyType: flag({ name: 'key-type', default: 'ecdsa-p256', help: `Key type of the new keys (${KEY_TYPES.join(', ')}).`, parse: parse.oneOf<KeyType>(...KEY_TYPES) }),
  rootTtl: flag({ name: 'root-ttl', default: '87600h', help: 'Lifetime of a new root certificate.', parse: parse.duration }),
  caTtl: flag({ name: 'ca-ttl', default: '8760h', help: 'Lifetime of the intermediate (never beyond the root).', parse: parse.duration }),
  fromRoot: flag({ name: 'from-root', help: 'Directory with root-cert.pem and root-key.pem of an existing root: make another intermediate under it.', parse: parse.string }),
  organization: flag({ name: 'organization', help: 'Subject O= of the certificates [default: the trust domain].', parse: parse.string }),
  force: flag({ name: 'force', boolean: true, default: 'false', help: 'Overwrite files that already exist in --out.', parse: parse.bool }),
};

export const inspectFlags = {
  file: flag({ name: 'file', help: 'PEM file with one or more certificates (may also be given as the first argument).', parse: parse.string }),
};

export const revokeFlags = {
  caCert: flag({ name: 'ca-cert', help: 'The CA whose CRL to write (e.g. root-cert.pem of a root kept offline).', parse: parse.string }),
  caKey: flag({ name: 'ca-key', help: 'Its private key (e.g. root-key.pem).', parse: parse.string }),
  out: flag({ name: 'out', help: 'The CRL file to update (ca-crl.pem): this CA\'s CRL in it is replaced (its entries kept), other CAs\' CRLs are left as they are; created when missing.', parse: parse.string }),
  serial: flag({ name: 'serial', default: '', help: 'Serials (hex, comma-separated) to add, e.g. a compromised intermediate\'s.', parse: parse.list }),
  unrevoke: flag({ name: 'unrevoke', default: '', help: 'Serials (hex, comma-separated) to remove.', parse: parse.list }),
  reason: flag({ name: 'reason', default: 'unspecified', help: `Reason for the added serials (${Object.keys(CRL_REASONS).join(', ')}).`, parse: parse.oneOf<CrlReason>(...(Object.keys(CRL_REASONS) as CrlReason[])) }),
  validity: flag({ name: 'validity', default: '720h', help: 'nextUpdate - thisUpdate: run this again before then (Envoy refuses every handshake through the CA once its CRL has expired).', parse: parse.duration }),
};

/**
 * Signs PodCertificateRequests for citadel's signer name (KEP-4317). Key: `<namespace>/<name>`.
 * Gather (the request from the informer cache, its Pod read live) -> decide (src/ca/pod-certificates.ts) ->
 * sign through the CA's one signing path (CertificateAuthority.issueWorkload) -> one conditional status write.
 *
 * Only the leader signs: a request needs exactly one answer, the status can be written once (after a terminal
 * condition it is immutable), and the leader already runs a retrying work queue with a leadership-scoped abort
 * signal. The cost is that requests wait during a leader handover (about one lease duration, 15 s by default),
 * well inside the 15 minutes after which kube-controller-manager deletes a request. The write carries the
 * resourceVersion that was read, so even two signers racing (a partition) cannot overwrite each other: the second
 * gets 409 and finds the request already answered.
 */
import type { CertificateAuthority } from '../ca/authority.js';
import {
  beginRefreshAt,
  decidePodCertificate,
  issuedLifetimeProblem,
  PCR_DENIED,
  PCR_FAILED,
  PCR_ISSUED,
  PCR_REASONS,
  type PodCertificateDecision,
  type PodCertificatePolicy,
  type PodCertificateRefusal,
  type PodCertificateSpec,
} from '../ca/pod-certificates.js';
import type { Clock } from '../clock.js';
import { isCitadelError } from '../errors.js';
import type { ObjectWriter } from '../kube/writes.js';
import type { Logger } from '../log.js';
import type { ControllerMetrics } from './metrics.js';
import type { ObjectMeta } from './objects.js';
import { RetryLater } from './queue.js';
import type { Cache, Reconciler } from './reconciler.js';

export const POD_CERTIFICATE_CONTROLLER = 'pod-certificate';

interface Condition {
  readonly type: string;
  readonly status: string;
  readonly reason: string;
  readonly message: string;
  readonly lastTransitionTime: Date;
}

/** The slice of a PodCertificateRequest the signer reads and writes. */
export interface PodCertificateRequestObject {
  readonly metadata?: ObjectMeta;
  readonly spec: PodCertificateSpec & { readonly nodeName?: string };
  readonly status?: {
    readonly conditions?: readonly Condition[];
    readonly certificateChain?: string;
    readonly notBefore?: Date;
    readonly notAfter?: Date;
    readonly beginRefreshAt?: Date;
  };
}

const TERMINAL = new Set([PCR_ISSUED, PCR_DENIED, PCR_FAILED]);

/** True once a request has its answer (the API makes the status immutable from then on). */
export function isAnswered(pcr: PodCertificateRequestObject): boolean {
  return (pcr.status?.conditions ?? []).some((c) => TERMINAL.has(c.type) && c.status === 'True');
}

export const pcrKey = (pcr: { metadata?: { name?: string; namespace?: string } }): string | undefined =>
  pcr.metadata?.name && pcr.metadata.namespace ? `${pcr.metadata.namespace}/${pcr.metadata.name}` : undefined;

export interface PodCertificateDeps {
  readonly requests: Cache<PodCertificateRequestObject>;
  readonly ca: Pick<CertificateAuthority, 'issueWorkload'>;
  readonly policy: PodCertificatePolicy;
  readonly writer: ObjectWriter;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: ControllerMetrics;
}

export function createPodCertificateReconciler(deps: PodCertificateDeps): Reconciler {
  const log = deps.log.child({ controller: POD_CERTIFICATE_CONTROLLER });
  return {
    name: POD_CERTIFICATE_CONTROLLER,
    allKeys: () => deps.requests.list().filter((r) => !isAnswered(r)).map(pcrKey).filter((k): k is string => !!k),
    async reconcile(key, signal) {
      const [namespace, name] = key.split('/') as [string, string];
      const pcr = deps.requests.get(name, namespace);
      if (!pcr || isAnswered(pcr)) return;
      const { spec } = pcr;
      const pod = await deps.writer.readPod(namespace, spec.podName, signal);
      const decision = decidePodCertificate(namespace, spec, pod && { uid: pod.metadata?.uid, serviceAccountName: pod.spec?.serviceAccountName }, deps.policy);
      const answer = decision.action === 'issue' ? sign(decision) : refuse(decision);
      const outcome = await deps.writer.updatePodCertificateRequestStatus({ ...pcr, status: answer.status } as Writable, signal);
      deps.metrics.writes.inc({ controller: POD_CERTIFICATE_CONTROLLER, action: 'update', outcome });
      if (outcome === 'gone') return;
      if (outcome !== 'updated') throw new RetryLater(`PodCertificateRequest ${key}: status update ${outcome}`);
      const { type: conditionType, reason } = answer.status.conditions[0]!;
      deps.metrics.podCertificates.inc({ condition: conditionType, reason });
      const fields = { namespace, request: name, pod: spec.podName, podUid: spec.podUID, node: spec.nodeName };
      if (answer.issued) {
        const { spiffeId, keyType, serialHex, notAfter } = answer.issued;
        log.info({ audit: 'certificate-issued', identity: spiffeId, serial: serialHex, notAfter: new Date(notAfter).toISOString(), keyType, authn: 'pod-certificate-request', ...fields }, 'issued pod certificate');
      } else {
        log.warn({ ...fields, condition: conditionType, reason, message: answer.status.conditions[0]!.message }, 'pod certificate request refused');
      }
    },
  };

  /** Signs through the CA's one signing path; a leaf the signing certificate cut under an hour becomes Failed. */
  function sign(decision: Extract<PodCertificateDecision, { action: 'issue' }>): Answer {
    let cert;
    try {
      cert = deps.ca.issueWorkload({ publicKey: decision.publicKey, spiffeId: decision.spiffeId, ttlMs: decision.ttlMs });
    } catch (err) {
      // Not an answer: retried with backoff rather than failing the request for good.
      if (isCitadelError(err, 'CA_NOT_READY')) throw new RetryLater('CA key material is not loaded yet');
      throw err;
    }
    const problem = issuedLifetimeProblem(cert.notBefore, cert.notAfter);
    if (problem) return refuse(problem);
    return {
      status: {
        conditions: [condition(PCR_ISSUED, PCR_REASONS.issued, `issued ${decision.spiffeId}`, deps.clock.now())],
        // Leaf first, then intermediates; the roots reach pods through the ClusterTrustBundle.
        certificateChain: cert.chain.slice(0, -1).join(''),
        notBefore: new Date(cert.notBefore),
        notAfter: new Date(cert.notAfter),
        beginRefreshAt: new Date(beginRefreshAt(cert.notBefore, cert.notAfter)),
      },
      issued: { spiffeId: decision.spiffeId, keyType: decision.keyType, serialHex: cert.serialHex, notAfter: cert.notAfter },
    };
  }

  function refuse(decision: PodCertificateRefusal): Answer {
    return { status: { conditions: [condition(decision.action === 'deny' ? PCR_DENIED : PCR_FAILED, decision.reason, decision.message, deps.clock.now())] } };
  }
}

/** The status to write, and for an issued certificate what the audit line says. */
interface Answer {
  readonly status: { conditions: Condition[]; certificateChain?: string; notBefore?: Date; notAfter?: Date; beginRefreshAt?: Date };
  readonly issued?: { spiffeId: string; keyType: string; serialHex: string; notAfter: number };
}

type Writable = Parameters<ObjectWriter['updatePodCertificateRequestStatus']>[0];

function condition(type: string, reason: string, message: string, now: number): Condition {
  // metav1.Time has whole seconds.
  return { type, status: 'True', reason, message: message.slice(0, 32_000), lastTransitionTime: new Date(Math.floor(now / 1000) * 1000) };
}

import { describe, expect, it } from 'vitest';
import { authzConfigMapData, COMPILED_CONDITION, decidePolicyStatus, type PolicyObject } from '../../../src/controllers/authz.js';

const NOW = new Date('2026-12-01T10:00:00.123Z');
const policy = (spec: PolicyObject['spec'], status?: PolicyObject['status'], generation = 2): PolicyObject => ({ metadata: { name: 'p', namespace: 'ns', generation }, spec, ...(status ? { status } : {}) });

describe('AuthorizationPolicy status', () => {
  it('says Compiled=True for a policy compiled exactly, and nothing more once it does', () => {
    const status = decidePolicyStatus(policy({ rules: [{}] }), 'cluster.local', NOW)!;
    expect(status).toEqual({ conditions: [{ type: COMPILED_CONDITION, status: 'True', reason: 'Compiled', message: 'compiled into Envoy RBAC exactly', observedGeneration: 2, lastTransitionTime: '2026-12-01T10:00:00Z' }] });
    expect(decidePolicyStatus(policy({ rules: [{}] }, status as PolicyObject['status']), 'cluster.local', new Date(NOW.getTime() + 60_000))).toBeUndefined();
  });

  it('says Compiled=False with every problem, keeps other conditions and fields, and moves the transition time only on a flip', () => {
    const istio = { type: 'Reconciled', status: 'True' as const };
    const before = { conditions: [istio, { type: COMPILED_CONDITION, status: 'True' as const, reason: 'Compiled', message: 'compiled into Envoy RBAC exactly', observedGeneration: 1, lastTransitionTime: '2026-01-01T00:00:00Z' }], validationMessages: [] };
    const status = decidePolicyStatus(policy({ action: 'CUSTOM', provider: { name: 'opa' }, rules: [{ when: [{ key: 'a' }] }] }, before), 'cluster.local', NOW)!;
    expect(status.validationMessages).toEqual([]);
    const conditions = status.conditions as Array<Record<string, unknown>>;
    expect(conditions[0]).toEqual(istio);
    expect(conditions[1]).toMatchObject({ status: 'False', reason: 'PartlyUnsupported', observedGeneration: 2, lastTransitionTime: '2026-12-01T10:00:00Z' });
    expect(conditions[1]!.message).toMatch(/CUSTOM .*; rule 0: when not supported; ignored, so the rule denies more$/);
    // Same verdict, new generation: the transition time stays.
    const again = decidePolicyStatus({ ...policy({ rules: [{ when: [{ key: 'a' }] }] }, status as PolicyObject['status'], 3) }, 'cluster.local', new Date(NOW.getTime() + 5000))!;
    expect((again.conditions as Array<Record<string, unknown>>)[1]).toMatchObject({ status: 'False', observedGeneration: 3, lastTransitionTime: '2026-12-01T10:00:00Z' });
  });
});

describe('citadel-authz data', () => {
  it('is the compiled document of the namespace, stable across calls and policy order', () => {
    const a = policy({ rules: [{}] });
    const b: PolicyObject = { metadata: { name: 'q', namespace: 'ns' }, spec: { action: 'DENY', rules: [{}] } };
    const data = authzConfigMapData('ns', 'cluster.local', [a, b]);
    expect(data).toBe(authzConfigMapData('ns', 'cluster.local', [b, a]));
    expect(JSON.parse(data)).toMatchObject({ version: 1, namespace: 'ns', selectors: [{ allow: { 'ns[ns]-policy[p]-rule[0]': {} }, deny: { 'ns[ns]-policy[q]-rule[0]': {} } }] });
  });
});

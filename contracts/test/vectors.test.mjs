// docs/signing.md's worked vectors, on the EVM: the contracts compute the same digests and
// separators, and accept the same signatures (made by hanzo-kms and checked with eth-account).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Chain, Contract } from './lib/evm.mjs';

const doc = fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'signing.md'), 'utf8');
const V = Object.fromEntries([...doc.matchAll(/^(\w+)\s+= (0x[0-9a-fA-F]+)$/gm)].map((m) => [m[1], m[2]]));

const h = (c) => '0x' + c.repeat(64);
const att = ['acme:gpt4', h('1'), h('2'), 1795000000n, 1500n, 'node-1', h('3')];
const att2 = ['acme:gpt4', h('1'), h('2'), 1795000000n, 1500n, 'node-2', h('5')];
const settlement = ['job-42', '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed', '0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359',
  10n ** 18n, V.attestation_digest, 1795000100n, 1795086500n, h('4')];

/// A PoAIVerifier alone, and an HMMSettlement (a PoAIVerifier with settlements).
async function deploy(bind) {
  const chain = await Chain.create({ timestamp: 1795000000n });
  const owner = chain.sender.toString();
  const v = new Contract(chain, await chain.deploy('PoAIVerifier', [owner, bind, 3600n]));
  const s = new Contract(chain, await chain.deploy('HMMSettlement', [owner, bind, 3600n]));
  return { chain, v, s };
}

test('the vectors are in docs/signing.md', () => {
  for (const k of ['signer', 'domain_separator', 'attestation_digest', 'settlement_digest', 'batch_root', 'batch_digest', 'domain_separator_with_contract']) {
    assert.ok(V[k], k);
  }
});

test('domain separator, digests and signatures of the worked vectors', async () => {
  const { chain, v, s } = await deploy(false);
  assert.equal((await v.call('domainSeparator')).result[0], V.domain_separator);
  assert.equal((await s.call('domainSeparator')).result[0], V.domain_separator);
  assert.equal((await v.call('eip712Domain')).result.fields, '0x07');
  assert.equal((await v.call('domainContract')).result[0], '0x' + '00'.repeat(20));
  assert.equal((await v.call('attestationDigest', [att])).result[0], V.attestation_digest);
  assert.equal((await v.call('attestationDigest', [att2])).result[0], V.second_attestation_digest);
  assert.equal((await s.call('settlementDigest', [settlement])).result[0], V.settlement_digest);
  assert.equal((await v.call('batchDigest', [V.batch_root, 2n, 1795000200n])).result[0], V.batch_digest);

  for (const c of [v, s]) {
    assert.equal((await c.send('setModelSigner', ['acme:gpt4', V.signer, true])).reverted, false);
    const ok = await c.call('verify', [att, V.attestation_signature], { timestamp: 1795000010n });
    assert.equal(ok.reverted, false, ok.error?.name);
    assert.deepEqual([...ok.result], [V.attestation_digest, V.signer]);
    // The batch of two: item 0's proof is item 1's leaf, on the right; item 1's is item 0's, on the left.
    const item = await c.call('verifyBatchItem', [att, V.batch_root, 2n, 1795000200n, V.batch_signature, 0n, [[V.batch_proof_0, false]]], { timestamp: 1795000010n });
    assert.equal(item.reverted, false, item.error?.name);
    assert.equal(item.result[1], V.signer);
  }

  assert.equal((await s.send('setSettlementSigner', [V.signer, true])).reverted, false);
  const st = await s.call('verifySettlement', [settlement, V.settlement_signature], { timestamp: 1795000200n });
  assert.equal(st.reverted, false, st.error?.name);
  assert.deepEqual([...st.result], [V.settlement_digest, V.signer]);
  assert.equal(chain.chainId, 96369n);
});

test('the verifyingContract form uses the deployed address', async () => {
  const { v, s } = await deploy(true);
  const { TypedDataEncoder } = await import('ethers');
  for (const c of [v, s]) {
    assert.equal((await c.call('domainContract')).result[0], c.address);
    const sep = (await c.call('domainSeparator')).result[0];
    assert.equal(sep, TypedDataEncoder.hashDomain({ name: 'Hanzo KMS', version: '1', chainId: 96369, verifyingContract: c.address }));
    const d = await c.call('eip712Domain');
    assert.equal(d.result.fields, '0x0f');
    assert.equal(d.result.verifyingContract, c.address);
  }
});

test('the documented separator for verifyingContract 0xCcCC…cccC', async () => {
  // Deploy at a chosen address is not possible from an EOA; recompute the separator as the
  // contract does, with ethers' EIP-712 hasher, and compare with the vector.
  const { TypedDataEncoder } = await import('ethers');
  const sep = TypedDataEncoder.hashDomain({ name: 'Hanzo KMS', version: '1', chainId: 96369, verifyingContract: '0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC' });
  assert.equal(sep, V.domain_separator_with_contract);
});

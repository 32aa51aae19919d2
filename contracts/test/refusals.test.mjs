// Every refusal of the verifier and the settlement contract, on signatures made by hanzo-kms:
// each reverts with its named custom error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Kms, attestationInput, settlementInput, abi } from './lib/kms.mjs';
import { deploy, register, must, now } from './lib/setup.mjs';
import { artifacts } from './lib/evm.mjs';
import { highS, withV, flipBit, N } from './lib/tamper.mjs';

const kms = Kms.create({ name: 'refusals' });
const stranger = Kms.create({ name: 'stranger' }); // another KMS: same key names, other keys

/// Expect `r` to have reverted with custom error `name`; returns its arguments.
function refused(r, name) {
  assert.equal(r.reverted, true, `expected ${name}, but it succeeded`);
  assert.ok(r.error, `expected ${name}, got revert data ${r.revertData}`);
  assert.equal(r.error.name, name, `expected ${name}, got ${r.error.name}(${r.error.args.join(', ')})`);
  return r.error.args;
}

const setup = (async () => {
  const d = await deploy();
  const addrs = await register(d, kms);
  return { d, ...addrs };
})();

test('a valid attestation verifies, and its edits do not', async () => {
  const { d, poaiAddress } = await setup;
  const signed = kms.signAttestation(attestationInput(now()));
  const a = abi.attestation(signed.attestation);
  const ok = must(await d.verifier.call('verify', [a, signed.signature]));
  assert.deepEqual([...ok.result], [signed.digest, poaiAddress]);
  const edits = {
    modelId: (x) => x + 'x',
    inputHash: (x) => flipBit(x, 31),
    outputHash: (x) => flipBit(x, 0, 7),
    timestamp: (x) => x + 1n,
    computeTimeMs: (x) => x + 1n,
    nodeId: (x) => 'node-2',
    nonce: (x) => flipBit(x, 16, 3),
  };
  const names = Object.keys(edits);
  for (const [i, field] of names.entries()) {
    const edited = [...a];
    edited[i] = edits[field](a[i]);
    const [signer] = refused(await d.verifier.call('verify', [edited, signed.signature]), 'SignerNotAuthorised');
    assert.notEqual(signer, poaiAddress, field);
  }
});

test('another key, an unregistered signer, a withdrawn signer, a node signer', async () => {
  const { d, poaiAddress } = await setup;
  const input = { ...attestationInput(now()), nonce: '0x' + 'ab'.repeat(32) };
  const mine = kms.signAttestation(input);
  const theirs = stranger.signAttestation(input);
  assert.equal(theirs.digest, mine.digest); // the same message, another key
  const a = abi.attestation(mine.attestation);
  // Another key's signature on our attestation.
  assert.deepEqual([...refused(await d.verifier.call('verify', [a, theirs.signature]), 'SignerNotAuthorised')], [theirs.signer]);
  // Registered for another model, still refused for this one.
  must(await d.verifier.send('setModelSigner', ['acme:other', theirs.signer, true]));
  refused(await d.verifier.call('verify', [a, theirs.signature]), 'SignerNotAuthorised');
  // Registered for the node: accepted for any model from that node.
  must(await d.verifier.send('setNodeSigner', ['node-1', theirs.signer, true]));
  assert.equal(must(await d.verifier.call('verify', [a, theirs.signature])).result[1], theirs.signer);
  must(await d.verifier.send('setNodeSigner', ['node-1', theirs.signer, false]));
  refused(await d.verifier.call('verify', [a, theirs.signature]), 'SignerNotAuthorised');
  // Withdrawn: our own key, once the owner withdraws it.
  must(await d.verifier.send('setModelSigner', ['acme:gpt4', poaiAddress, false]));
  refused(await d.verifier.call('verify', [a, mine.signature]), 'SignerNotAuthorised');
  must(await d.verifier.send('setModelSigner', ['acme:gpt4', poaiAddress, true]));
  must(await d.verifier.call('verify', [a, mine.signature]));
  // The owner's registry refuses the zero address.
  refused(await d.verifier.send('setModelSigner', ['acme:gpt4', '0x' + '00'.repeat(20), true]), 'ZeroSigner');
});

test('signature form: high-S twin, v = 0/1 and others, length, no key', async () => {
  const { d } = await setup;
  const signed = kms.signAttestation(attestationInput(now()));
  const a = abi.attestation(signed.attestation);
  const twin = highS(signed.signature);
  const [s] = refused(await d.verifier.call('verify', [a, twin]), 'SignatureSInvalid');
  assert.ok(BigInt(s) > N / 2n);
  const v = Number(BigInt('0x' + signed.signature.slice(-2)));
  for (const bad of [v - 27, 0, 1, 29, 255]) {
    assert.deepEqual([...refused(await d.verifier.call('verify', [a, withV(signed.signature, bad)]), 'SignatureVInvalid')], [BigInt(bad)]);
  }
  // The other recovery id: another key recovers, and it is not authorised.
  refused(await d.verifier.call('verify', [a, withV(signed.signature, v === 27 ? 28 : 27)]), 'SignerNotAuthorised');
  for (const sig of [signed.signature.slice(0, -2), signed.signature + '00', '0x']) {
    refused(await d.verifier.call('verify', [a, sig]), 'SignatureLengthInvalid');
  }
  // r = 0: no point, ecrecover finds no key.
  const zeroR = '0x' + '00'.repeat(32) + signed.signature.slice(66);
  refused(await d.verifier.call('verify', [a, zeroR]), 'SignatureInvalid');
});

test('wrong chainId and wrong verifyingContract', async () => {
  const { d } = await setup;
  // Signed for chain 1, submitted to chain 96369.
  const other = kms.signAttestation(attestationInput(now()), { env: { HANZO_KMS__KMS__HANZO__EIP712__CHAIN_ID: '1' } });
  refused(await d.verifier.call('verify', [abi.attestation(other.attestation), other.signature]), 'SignerNotAuthorised');
  // The default domain submitted to a chain with another id.
  const c1 = await deploy({ chainId: 1n });
  await register(c1, kms);
  const signed = kms.signAttestation(attestationInput(now()));
  refused(await c1.verifier.call('verify', [abi.attestation(signed.attestation), signed.signature]), 'SignerNotAuthorised');

  // A deployment whose domain names the contract.
  const b = await deploy({ bind: true });
  await register(b, kms);
  const vc = (addr) => ({ env: { HANZO_KMS__KMS__HANZO__EIP712__VERIFYING_CONTRACT: addr } });
  const right = kms.signAttestation(attestationInput(now()), vc(b.verifier.address));
  must(await b.verifier.call('verify', [abi.attestation(right.attestation), right.signature]));
  const wrong = kms.signAttestation(attestationInput(now()), vc('0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC'));
  refused(await b.verifier.call('verify', [abi.attestation(wrong.attestation), wrong.signature]), 'SignerNotAuthorised');
  // Without verifyingContract, refused by the bound deployment; with it, by the unbound one.
  refused(await b.verifier.call('verify', [abi.attestation(signed.attestation), signed.signature]), 'SignerNotAuthorised');
  refused(await d.verifier.call('verify', [abi.attestation(right.attestation), right.signature]), 'SignerNotAuthorised');
});

test('the validity window: expired after the TTL, not valid more than 60 s ahead', async () => {
  const { d } = await setup;
  const signed = kms.signAttestation(attestationInput(now()));
  const a = abi.attestation(signed.attestation);
  const ts = BigInt(signed.attestation.timestamp);
  must(await d.verifier.call('verify', [a, signed.signature], { timestamp: ts + 3600n }));
  assert.deepEqual([...refused(await d.verifier.call('verify', [a, signed.signature], { timestamp: ts + 3601n }), 'AttestationExpired')], [ts, ts + 3601n]);
  must(await d.verifier.call('verify', [a, signed.signature], { timestamp: ts - 60n }));
  assert.deepEqual([...refused(await d.verifier.call('verify', [a, signed.signature], { timestamp: ts - 61n }), 'AttestationNotYetValid')], [ts, ts - 61n]);
  // The TTL is the deployment's: 7200 s here, as with attestation_ttl: 7200.
  const long = await deploy({ ttl: 7200n });
  await register(long, kms);
  must(await long.verifier.call('verify', [a, signed.signature], { timestamp: ts + 7200n }));
  refused(await long.verifier.call('verify', [a, signed.signature], { timestamp: ts + 7201n }), 'AttestationExpired');
  // A batch item has the same window, on its own attestation's timestamp.
  const [item] = kms.signBatch([attestationInput(now())]);
  const its = BigInt(item.attestation.timestamp);
  const args = [abi.attestation(item.attestation), abi.batchProof(item)];
  refused(await d.verifier.call('verifyBatchProof', args, { timestamp: its + 3601n }), 'AttestationExpired');
  refused(await d.verifier.call('verifyBatchProof', args, { timestamp: its - 61n }), 'AttestationNotYetValid');
});

test('batch items: another batch, a flipped side, an edited batch, the index, a long proof', async () => {
  const { d, poaiAddress } = await setup;
  const items = kms.signBatch([0, 1, 2, 3, 4].map((i) => attestationInput(now(), { node_id: `n-${i}` })));
  const others = kms.signBatch([0, 1, 2, 3, 4].map((i) => attestationInput(now(), { node_id: `m-${i}` })));
  const item = items[1];
  const a = abi.attestation(item.attestation);
  const call = (args) => d.verifier.call('verifyBatchItem', [a, ...args]);
  const base = () => [item.batch.root, BigInt(item.batch.count), BigInt(item.batch.timestamp), item.signature, BigInt(item.index), abi.proof(item.proof)];
  assert.deepEqual([...must(await call(base())).result], [item.digest, poaiAddress]);
  for (const it of items) must(await d.verifier.call('verifyBatchProof', [abi.attestation(it.attestation), abi.batchProof(it)]));

  // A proof for another batch (same index), with this batch's root and signature, and with its own.
  const foreign = others[1];
  let args = base(); args[5] = abi.proof(foreign.proof);
  refused(await call(args), 'MerkleRootMismatch');
  args = [foreign.batch.root, BigInt(foreign.batch.count), BigInt(foreign.batch.timestamp), foreign.signature, 1n, abi.proof(foreign.proof)];
  refused(await call(args), 'MerkleRootMismatch');
  // Another item's proof of the same batch.
  args = base(); args[5] = abi.proof(items[0].proof);
  refused(await call(args), 'MerkleRootMismatch');
  // Each step's side flipped, each sibling edited, a step dropped, a step added.
  for (let i = 0; i < item.proof.length; i++) {
    args = base(); args[5] = abi.proof(item.proof); args[5][i] = [args[5][i][0], !args[5][i][1]];
    refused(await call(args), 'MerkleRootMismatch');
    args = base(); args[5] = abi.proof(item.proof); args[5][i] = [flipBit(args[5][i][0], 5), args[5][i][1]];
    refused(await call(args), 'MerkleRootMismatch');
  }
  args = base(); args[5] = abi.proof(item.proof).slice(1);
  refused(await call(args), 'MerkleRootMismatch');
  args = base(); args[5] = [...abi.proof(item.proof), [item.batch.root, false]];
  refused(await call(args), 'MerkleRootMismatch');
  // The batch's fields: root (no longer the proof's), count and timestamp (another signed message).
  args = base(); args[0] = flipBit(args[0], 0);
  refused(await call(args), 'MerkleRootMismatch');
  args = base(); args[1] += 1n;
  assert.notEqual(refused(await call(args), 'SignerNotAuthorised')[0], poaiAddress);
  args = base(); args[2] += 1n;
  refused(await call(args), 'SignerNotAuthorised');
  // The batch signature's form.
  args = base(); args[3] = highS(item.signature);
  refused(await call(args), 'SignatureSInvalid');
  args = base(); args[3] = withV(item.signature, 1);
  refused(await call(args), 'SignatureVInvalid');
  // The index must be below the count.
  args = base(); args[4] = 5n;
  assert.deepEqual([...refused(await call(args), 'BatchIndexOutOfRange')], [5n, 5n]);
  // More steps than any tree of 2^64 leaves.
  args = base(); args[5] = Array.from({ length: 65 }, () => [item.batch.root, false]);
  assert.deepEqual([...refused(await call(args), 'ProofTooLong')], [65n]);
  // The batch from another KMS's key.
  const [strange] = stranger.signBatch([attestationInput(now())]);
  refused(await d.verifier.call('verifyBatchProof', [abi.attestation(strange.attestation), abi.batchProof(strange)]), 'SignerNotAuthorised');
});

test('settlement refusals', async () => {
  const { d, hmmAddress, poaiAddress } = await setup;
  const signed = kms.signAttestation(attestationInput(now()));
  const settled = kms.signSettlement(settlementInput(signed.digest, now()), { signed });
  const s = abi.settlement(settled.settlement);
  const att = [abi.attestation(signed.attestation), signed.signature];
  assert.deepEqual([...must(await d.settlement.call('verifySettlement', [s, settled.signature])).result], [settled.digest, hmmAddress]);

  // Each field edited.
  const edits = [(x) => x + '!', () => poaiAddress, () => hmmAddress, (x) => x + 1n, (x) => flipBit(x, 3), (x) => x - 1n, (x) => x + 1n, (x) => flipBit(x, 30)];
  for (const [i, edit] of edits.entries()) {
    const edited = [...s];
    edited[i] = edit(s[i]);
    const [signer] = refused(await d.settlement.call('verifySettlement', [edited, settled.signature]), 'SettlementSignerNotAuthorised');
    assert.notEqual(signer, hmmAddress, `field ${i}`);
  }
  // The signature's form, and a settlement key that is not registered (another KMS's).
  refused(await d.settlement.call('verifySettlement', [s, highS(settled.signature)]), 'SignatureSInvalid');
  refused(await d.settlement.call('verifySettlement', [s, withV(settled.signature, 0)]), 'SignatureVInvalid');
  refused(await d.settlement.call('verifySettlement', [s, settled.signature.slice(0, 130)]), 'SignatureLengthInvalid');
  // The stranger settles only attestations its own keys signed: it signs the same attestation
  // (same fields and nonce, so the same digest) under its own PoAI key first.
  const strangers = stranger.signAttestation(signed.attestation);
  assert.equal(strangers.digest, signed.digest);
  const foreign = stranger.signSettlement({ ...settlementInput(signed.digest, now()), nonce: settled.settlement.nonce, timestamp: settled.settlement.timestamp }, { signed: strangers });
  assert.equal(foreign.digest, settled.digest);
  assert.deepEqual([...refused(await d.settlement.call('verifySettlement', [s, foreign.signature]), 'SettlementSignerNotAuthorised')], [foreign.signer]);

  // Expiry (valid up to and including `expiry`) and the 60 s future bound.
  const exp = BigInt(settled.settlement.expiry);
  const ts = BigInt(settled.settlement.timestamp);
  must(await d.settlement.call('verifySettlement', [s, settled.signature], { timestamp: exp }));
  assert.deepEqual([...refused(await d.settlement.call('verifySettlement', [s, settled.signature], { timestamp: exp + 1n }), 'SettlementExpired')], [exp, exp + 1n]);
  must(await d.settlement.call('verifySettlement', [s, settled.signature], { timestamp: ts - 60n }));
  refused(await d.settlement.call('verifySettlement', [s, settled.signature], { timestamp: ts - 61n }), 'SettlementNotYetValid');
  // With its attestation: by then the attestation's own TTL is long over.
  refused(await d.settlement.call('settleWithAttestation', [s, settled.signature, ...att], { timestamp: exp + 1n }), 'AttestationExpired');

  // The attestation: not recorded, another one than the settlement names, or invalid.
  refused(await d.settlement.call('settle', [s, settled.signature]), 'AttestationNotRecorded');
  const otherAtt = kms.signAttestation(attestationInput(now(), { node_id: 'other' }));
  assert.deepEqual([...refused(await d.settlement.call('settleWithAttestation', [s, settled.signature, abi.attestation(otherAtt.attestation), otherAtt.signature]), 'AttestationDigestMismatch')], [signed.digest, otherAtt.digest]);
  refused(await d.settlement.call('settleWithAttestation', [s, settled.signature, att[0], highS(att[1])]), 'SignatureSInvalid');
  const [item] = kms.signBatch([attestationInput(now(), { node_id: 'batched' })]);
  refused(await d.settlement.call('settleWithBatchItem', [s, settled.signature, abi.attestation(item.attestation), abi.batchProof(item)]), 'AttestationDigestMismatch');
  const flipped = abi.batchProof(item); flipped[0] = flipBit(flipped[0], 1);
  refused(await d.settlement.call('settleWithBatchItem', [s, settled.signature, abi.attestation(item.attestation), flipped]), 'MerkleRootMismatch');
  // After all those refusals, the settlement itself still goes through: none of them wrote.
  must(await d.settlement.send('settleWithAttestation', [s, settled.signature, ...att]));
});

test('only the owner manages signers', async () => {
  const d = await deploy();
  must(await d.settlement.send('renounceOwnership'));
  const who = d.owner;
  assert.deepEqual([...refused(await d.verifier.send('setModelSigner', ['acme:gpt4', who, true]), 'OwnableUnauthorizedAccount')], [who]);
  refused(await d.verifier.send('setNodeSigner', ['node-1', who, true]), 'OwnableUnauthorizedAccount');
  refused(await d.settlement.send('setSettlementSigner', [who, true]), 'OwnableUnauthorizedAccount');
});

test('a deployment with a zero TTL is refused', async () => {
  const d = await deploy();
  const art = artifacts().PoAIVerifier;
  const r = await d.chain.send(null, art.bytecode + d.verifier.iface.encodeDeploy([d.owner, false, 0n]).slice(2));
  assert.equal(r.reverted, true);
  assert.equal(d.verifier.errors.parseError(r.revertData).name, 'ZeroTtl');
});

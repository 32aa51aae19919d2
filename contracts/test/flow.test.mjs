// The spec's "complete AI inference flow" (HIP-005), ending on the EVM: hanzo-kms signs an
// attestation and a settlement, the contracts verify them, and the settlement event appears.
// Then the on-chain replay rules: an attestation is settled once, a nonce used once, across
// transactions and blocks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Kms, attestationInput, settlementInput, abi } from './lib/kms.mjs';
import { deploy, register, must, now } from './lib/setup.mjs';

const kms = Kms.create({ name: 'flow' });

test('attestation, settlement, Settled event (verified earlier, in the same call, as a batch item)', async () => {
  const d = await deploy();
  const { poaiAddress, hmmAddress } = await register(d, kms);

  // 3. Create the PoAI attestation (hanzo-kms poai sign), and record it on chain.
  const signed = kms.signAttestation(attestationInput(now()));
  assert.equal(signed.signer, poaiAddress);
  const rec = must(await d.verifier.send('recordAttestation', [abi.attestation(signed.attestation), signed.signature]));
  assert.equal(rec.result[0], signed.digest);
  assert.deepEqual(rec.events.map((e) => e.name), ['AttestationRecorded']);
  assert.equal(rec.events[0].args.digest, signed.digest);
  assert.equal(rec.events[0].args.signer, poaiAddress);
  assert.equal((await d.verifier.call('isRecorded', [signed.digest])).result[0], true);

  // 4. The settlement for it (hanzo-kms hmm sign --attestation), 5. submitted on chain.
  const settled = kms.signSettlement(settlementInput(signed.digest, now()), { signed });
  const tx = must(await d.settlement.send('settle', [abi.settlement(settled.settlement), settled.signature]));
  assert.equal(tx.result[0], settled.digest);
  assert.equal(tx.events.length, 1);
  const ev = tx.events[0];
  assert.equal(ev.name, 'Settled');
  assert.equal(ev.args.attestationDigest, signed.digest);
  assert.equal(ev.args.settlementDigest, settled.digest);
  assert.equal(ev.args.provider, settled.settlement.provider);
  assert.equal(ev.args.consumer, settled.settlement.consumer);
  assert.equal(ev.args.amount, BigInt(settled.settlement.amount));
  assert.equal(ev.args.jobId, settled.settlement.job_id);
  assert.equal(ev.args.nonce, settled.settlement.nonce);
  assert.equal(ev.args.signer, hmmAddress);
  assert.equal((await d.settlement.call('settledBy', [signed.digest])).result[0], settled.digest);
  assert.equal((await d.settlement.call('nonceUsed', [hmmAddress, settled.settlement.nonce])).result[0], true);

  // The attestation verified in the same call.
  const signed2 = kms.signAttestation(attestationInput(now(), { node_id: 'node-2' }));
  const settled2 = kms.signSettlement(settlementInput(signed2.digest, now(), { job_id: 'job-43' }), { signed: signed2 });
  const tx2 = must(await d.settlement.send('settleWithAttestation', [abi.settlement(settled2.settlement), settled2.signature, abi.attestation(signed2.attestation), signed2.signature]));
  assert.equal(tx2.events[0].name, 'Settled');
  assert.equal(tx2.events[0].args.attestationDigest, signed2.digest);

  // A batch item verified in the same call.
  const items = kms.signBatch([0, 1, 2].map((i) => attestationInput(now(), { node_id: `batch-${i}` })));
  const item = items[2];
  const settled3 = kms.signSettlement(settlementInput(item.digest, now(), { job_id: 'job-44' }), { signed: item });
  const tx3 = must(await d.settlement.send('settleWithBatchItem', [abi.settlement(settled3.settlement), settled3.signature, abi.attestation(item.attestation), abi.batchProof(item)]));
  assert.equal(tx3.events[0].args.attestationDigest, item.digest);
  assert.equal(tx3.events[0].args.settlementDigest, settled3.digest);
});

test('an attestation is settled at most once and a nonce used once, across transactions and blocks', async () => {
  const d = await deploy();
  const { hmmAddress } = await register(d, kms);
  const signed = kms.signAttestation(attestationInput(now()));
  // A second KMS holding the same keys, copied before the settlement (as one restored from the
  // same backup): it has not seen the settlement, so it will sign another for the same attestation.
  const twin = kms.clone('twin');
  const settled = kms.signSettlement(settlementInput(signed.digest, now()), { signed });
  const args = [abi.settlement(settled.settlement), settled.signature, abi.attestation(signed.attestation), signed.signature];
  const first = must(await d.settlement.send('settleWithAttestation', args));

  // The same transaction again, in the next block.
  const again = await d.settlement.send('settleWithAttestation', args);
  assert.equal(again.block, first.block + 1n);
  assert.equal(again.error?.name, 'AlreadySettled');
  assert.deepEqual([...again.error.args], [signed.digest, settled.digest]);

  // A second settlement of the same attestation, from the twin (hanzo-kms itself refuses to sign
  // it twice), in a later block.
  assert.throws(() => kms.signSettlement(settlementInput(signed.digest, now(), { job_id: 'twice' }), { signed }), /replayed|already/i);
  const other = twin.signSettlement(settlementInput(signed.digest, now(), { job_id: 'twice' }), { signed });
  assert.equal(other.signer, hmmAddress);
  assert.notEqual(other.digest, settled.digest);
  const second = await d.settlement.send('settleWithAttestation', [abi.settlement(other.settlement), other.signature, ...args.slice(2)], { timestamp: first.timestamp + 120n });
  assert.ok(second.block >= first.block + 2n);
  assert.equal(second.error?.name, 'AlreadySettled');
  assert.equal((await d.settlement.call('settledBy', [signed.digest])).result[0], settled.digest);

  // The same signer's nonce on a settlement of another attestation.
  const signedB = kms.signAttestation(attestationInput(now(), { node_id: 'node-b' }));
  must(await d.verifier.send('recordAttestation', [abi.attestation(signedB.attestation), signedB.signature]));
  const reused = twin.signSettlement(settlementInput(signedB.digest, now(), { nonce: settled.settlement.nonce }), { signed: signedB });
  const r = await d.settlement.send('settle', [abi.settlement(reused.settlement), reused.signature]);
  assert.equal(r.error?.name, 'NonceAlreadyUsed');
  assert.deepEqual([...r.error.args], [hmmAddress, settled.settlement.nonce]);
  // With a fresh nonce the same settlement goes through: the refusal was the nonce's.
  const fresh = kms.signSettlement(settlementInput(signedB.digest, now()), { signed: signedB });
  must(await d.settlement.send('settle', [abi.settlement(fresh.settlement), fresh.signature]));
});

test('the call data of `hanzo-kms poai calldata` and `hmm calldata`, sent as is', async () => {
  const d = await deploy();
  await register(d, kms);
  const raw = async (c) => {
    const r = await d.chain.send(d.settlement.address, c.calldata);
    assert.equal(r.reverted, false, `${c.function}: ${r.revertData}`);
    return r.logs.map((l) => d.settlement.iface.parseLog(l)?.name);
  };
  const signed = kms.signAttestation(attestationInput(now()));
  const verifyCall = kms.calldata('poai', signed, { verify: true });
  assert.match(verifyCall.function, /^verify\(/);
  const v = must(await d.chain.call(d.settlement.address, verifyCall.calldata));
  assert.deepEqual([...d.settlement.iface.decodeFunctionResult('verify', v.returnData)], [signed.digest, signed.signer]);
  assert.deepEqual(await raw(kms.calldata('poai', signed)), ['AttestationRecorded']);
  const settled = kms.signSettlement(settlementInput(signed.digest, now()), { signed });
  assert.deepEqual(await raw(kms.calldata('hmm', settled)), ['Settled']);

  const signed2 = kms.signAttestation(attestationInput(now(), { node_id: 'cli-2' }));
  const settled2 = kms.signSettlement(settlementInput(signed2.digest, now()), { signed: signed2 });
  assert.deepEqual(await raw(kms.calldata('hmm', settled2, { attestation: signed2 })), ['Settled']);

  const [item] = kms.signBatch([attestationInput(now(), { node_id: 'cli-3' })]);
  assert.deepEqual(await raw(kms.calldata('poai', item)), ['AttestationRecorded']);
  const settled3 = kms.signSettlement(settlementInput(item.digest, now()), { signed: item });
  assert.deepEqual(await raw(kms.calldata('hmm', settled3, { item })), ['Settled']);
});

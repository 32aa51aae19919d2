// Property tests over random tampering (seeded; HANZO_CONTRACTS_SEED replays a run): no edit of a
// hanzo-kms attestation, settlement, batch item or signature is ever accepted, and each refusal is
// one of the named errors. Also: batches of every size from 1 to 17 verify item by item, which
// exercises the odd-node rule in every shape of up to five levels.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getBytes, hexlify } from 'ethers';
import { Kms, attestationInput, settlementInput, abi } from './lib/kms.mjs';
import { deploy, register, must, now } from './lib/setup.mjs';
import { flipBit, rng } from './lib/tamper.mjs';

const SEED = process.env.HANZO_CONTRACTS_SEED ?? String(Date.now());
const CASES = Number(process.env.HANZO_CONTRACTS_CASES ?? 150);
const kms = Kms.create({ name: 'property' });
const setup = (async () => {
  const d = await deploy();
  return { d, ...(await register(d, kms)) };
})();

const SIGNATURE_ERRORS = ['SignatureLengthInvalid', 'SignatureVInvalid', 'SignatureSInvalid', 'SignatureInvalid'];

/// A random edit of a byte string (0x hex): a flipped bit, a changed/inserted/removed byte.
function editBytes(r, hex) {
  const b = [...getBytes(hex)];
  const kind = b.length ? r.int(4) : 2;
  const i = r.int(Math.max(b.length, 1));
  if (kind === 0) b[i] ^= 1 << r.int(8);
  else if (kind === 1) b[i] = (b[i] + 1 + r.int(255)) & 0xff;
  else if (kind === 2) b.splice(r.int(b.length + 1), 0, r.int(256));
  else b.splice(i, 1);
  return hexlify(Uint8Array.from(b));
}

/// `hex` with byte `i` replaced by another value.
function editByteAt(r, hex, i) {
  const b = getBytes(hex);
  b[i] = (b[i] + 1 + r.int(255)) & 0xff;
  return hexlify(b);
}

/// A random edit of a string: a character changed, inserted or removed (never the same string).
function editString(r, s) {
  const chars = [...s];
  const kind = chars.length ? r.int(3) : 1;
  const i = r.int(Math.max(chars.length, 1));
  const c = String.fromCharCode(32 + r.int(95));
  if (kind === 0) chars[i] = chars[i] === c ? c + c : c;
  else if (kind === 1) chars.splice(r.int(chars.length + 1), 0, c);
  else chars.splice(i, 1);
  return chars.join('');
}

/// A random edit of one field of an ABI tuple, chosen by its type.
function editField(r, value, type) {
  switch (type) {
    case 'string': return editString(r, value);
    case 'bytes32': return flipBit(value, r.int(32), r.int(8));
    case 'address': return flipBit(value, r.int(20), r.int(8));
    case 'uint64': { const d = BigInt(1 + r.int(1000)); return value >= d && r.int(2) ? value - d : value + d; }
    case 'uint256': return value ^ (1n << BigInt(r.int(256)));
    default: throw new Error(type);
  }
}

const ATT_TYPES = ['string', 'bytes32', 'bytes32', 'uint64', 'uint64', 'string', 'bytes32'];
const SET_TYPES = ['string', 'address', 'address', 'uint256', 'bytes32', 'uint64', 'uint64', 'bytes32'];

test(`random edits of attestations and their signatures are refused (seed ${SEED})`, async () => {
  const { d, poaiAddress } = await setup;
  const r = rng(SEED);
  const signed = [0, 1, 2].map((i) => kms.signAttestation(attestationInput(now(), { node_id: `p-${i}`, compute_time_ms: 10 + i })));
  const seen = {};
  for (let n = 0; n < CASES; n++) {
    const s = r.pick(signed);
    const a = abi.attestation(s.attestation);
    let sig = s.signature;
    const what = r.int(3); // 0: a field, 1: the signature, 2: both
    if (what !== 1) { const f = r.int(a.length); a[f] = editField(r, a[f], ATT_TYPES[f]); }
    // A quarter of the signature edits hit v (its last byte); the rest anywhere.
    if (what !== 0) sig = r.int(4) === 0 ? editByteAt(r, sig, 64) : editBytes(r, sig);
    const res = await d.verifier.call('verify', [a, sig]);
    assert.equal(res.reverted, true, `case ${n} was accepted: ${JSON.stringify(a, (_, v) => (typeof v === 'bigint' ? String(v) : v))} ${sig}`);
    assert.ok(res.error, `case ${n}: unnamed revert ${res.revertData}`);
    const name = res.error.name;
    seen[name] = (seen[name] ?? 0) + 1;
    if (name === 'SignerNotAuthorised') assert.notEqual(res.error.args[0], poaiAddress, `case ${n}`);
    else if (name.startsWith('Attestation')) assert.ok(what !== 1, `case ${n}: ${name} for a signature edit`);
    else assert.ok(SIGNATURE_ERRORS.includes(name), `case ${n}: ${name}`);
  }
  // The run met the main refusals (with 150 cases each is all but certain).
  for (const name of ['SignerNotAuthorised', 'SignatureLengthInvalid', 'SignatureVInvalid']) assert.ok(seen[name], `${name} never seen: ${JSON.stringify(seen)}`);
});

test(`random edits of settlements are refused (seed ${SEED})`, async () => {
  const { d, hmmAddress } = await setup;
  const r = rng(`${SEED}1`);
  const att = kms.signAttestation(attestationInput(now(), { node_id: 'settle-prop' }));
  const settled = kms.signSettlement(settlementInput(att.digest, now()), { signed: att });
  for (let n = 0; n < CASES; n++) {
    const s = abi.settlement(settled.settlement);
    let sig = settled.signature;
    const what = r.int(3);
    if (what !== 1) { const f = r.int(s.length); s[f] = editField(r, s[f], SET_TYPES[f]); }
    if (what !== 0) sig = editBytes(r, sig);
    const res = await d.settlement.call('verifySettlement', [s, sig]);
    assert.equal(res.reverted, true, `case ${n} was accepted`);
    assert.ok(res.error, `case ${n}: unnamed revert ${res.revertData}`);
    if (res.error.name === 'SettlementSignerNotAuthorised') assert.notEqual(res.error.args[0], hmmAddress);
    else assert.ok([...SIGNATURE_ERRORS, 'SettlementExpired', 'SettlementNotYetValid'].includes(res.error.name), `case ${n}: ${res.error.name}`);
  }
});

test(`batches of 1 to 17 items verify item by item, and random proof edits are refused (seed ${SEED})`, async () => {
  const { d, poaiAddress } = await setup;
  const r = rng(`${SEED}2`);
  const MERKLE = ['MerkleRootMismatch', 'BatchIndexOutOfRange', 'ProofTooLong'];
  let edits = 0;
  for (let size = 1; size <= 17; size++) {
    const items = kms.signBatch(Array.from({ length: size }, (_, i) => attestationInput(now(), { node_id: `b${size}-${i}` })));
    assert.equal(items.length, size);
    for (const item of items) {
      const res = must(await d.verifier.call('verifyBatchProof', [abi.attestation(item.attestation), abi.batchProof(item)]));
      assert.deepEqual([...res.result], [item.digest, poaiAddress]);
      // Depth: never more than ceil(log2(size)) steps.
      assert.ok(item.proof.length <= Math.ceil(Math.log2(size)), `size ${size}`);
    }
    // A few random edits of this batch's proofs.
    for (let k = 0; k < 8; k++) {
      const item = r.pick(items);
      const p = abi.batchProof(item);
      const steps = p[5];
      const kind = r.int(6);
      let expect = MERKLE;
      if (kind === 0 && steps.length) { const i = r.int(steps.length); steps[i] = [steps[i][0], !steps[i][1]]; }
      else if (kind === 1 && steps.length) { const i = r.int(steps.length); steps[i] = [flipBit(steps[i][0], r.int(32), r.int(8)), steps[i][1]]; }
      else if (kind === 2 && steps.length) steps.splice(r.int(steps.length), 1);
      else if (kind === 3) steps.splice(r.int(steps.length + 1), 0, [flipBit(item.digest, 0), r.int(2) === 1]);
      else if (kind === 4 && size > 1) { const other = r.pick(items.filter((x) => x !== item)); p[5] = abi.proof(other.proof); if (JSON.stringify(other.proof) === JSON.stringify(item.proof)) continue; }
      else { p[0] = flipBit(p[0], r.int(32), r.int(8)); }
      edits++;
      const res = await d.verifier.call('verifyBatchProof', [abi.attestation(item.attestation), p]);
      assert.equal(res.reverted, true, `size ${size} edit ${kind} accepted`);
      assert.ok(res.error && expect.includes(res.error.name), `size ${size} edit ${kind}: ${res.error?.name}`);
    }
  }
  assert.ok(edits > 100);
});

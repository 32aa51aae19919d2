// The contracts spend no more gas than the same checks written plainly with OpenZeppelin's
// EIP712 + ECDSA (bench/BaselineOZ.sol), call for call, on hanzo-kms signatures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Kms } from './lib/kms.mjs';
import { measure, table } from './lib/gas.mjs';

test('gas: verify, verifyBatchItem (batch of 1,024), settleWithAttestation vs the OpenZeppelin baseline', async () => {
  const kms = Kms.create({ name: 'gas' });
  const m = await measure(kms, { batchSize: 1024 });
  console.log(table(m));
  const ours = m.rows['HMMSettlement (verifyingContract)'];
  const base = m.rows['BaselineOZ (OpenZeppelin EIP712 + ECDSA)'];
  for (const op of Object.keys(base)) {
    assert.ok(ours[op], op);
    assert.ok(ours[op].gas <= base[op].gas, `${op}: ${ours[op].gas} > baseline ${base[op].gas}`);
    // The same calldata: the same ABI, so any gas difference is execution.
    assert.equal(ours[op].calldata, base[op].calldata, op);
  }
  const item = Object.keys(ours).find((k) => k.startsWith('verifyBatchItem'));
  assert.match(item, /10 steps/);
});

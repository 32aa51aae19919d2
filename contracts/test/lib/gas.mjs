// Gas and calldata of the contracts against the plain OpenZeppelin EIP712 + ECDSA baseline
// (bench/BaselineOZ.sol), each on signatures hanzo-kms made for it. Gas is deterministic, so
// scripts/bench.mjs prints these figures and test/gas.test.mjs holds the contracts to them.
import { Chain, Contract } from './evm.mjs';
import { attestationInput, settlementInput, abi } from './kms.mjs';
import { must } from './setup.mjs';

const VC = 'HANZO_KMS__KMS__HANZO__EIP712__VERIFYING_CONTRACT';

/// Measures verify, verifyBatchItem (an item of a batch of `batchSize`) and a settlement with
/// its attestation on three contracts of one chain: HMMSettlement with the verifyingContract
/// domain (the same domain shape as the baseline), HMMSettlement with hanzo-kms's default domain,
/// and BaselineOZ. Returns {rows: {contract: {operation: {gas, execution, calldata}}}, batchSize}.
export async function measure(kms, { batchSize = 1024 } = {}) {
  const t0 = BigInt(Math.floor(Date.now() / 1000)) - 30n;
  const chain = await Chain.create({ timestamp: t0 });
  const owner = chain.sender.toString();
  const poai = kms.address('poai:acme:gpt4');
  const hmm = kms.address('hmm:acme:gpt4');
  const targets = {
    'HMMSettlement (verifyingContract)': { c: new Contract(chain, await chain.deploy('HMMSettlement', [owner, true, 3600n])), bound: true },
    'HMMSettlement (default domain)': { c: new Contract(chain, await chain.deploy('HMMSettlement', [owner, false, 3600n])), bound: false },
    'BaselineOZ (OpenZeppelin EIP712 + ECDSA)': { c: new Contract(chain, await chain.deploy('BaselineOZ', [3600n])), bound: true, baseline: true },
  };
  const rows = {};
  for (const [name, t] of Object.entries(targets)) {
    const { c } = t;
    if (t.baseline) {
      must(await c.send('setModelSigner', ['acme:gpt4', poai]));
      must(await c.send('setSettlementSigner', [hmm]));
    } else {
      must(await c.send('setModelSigner', ['acme:gpt4', poai, true]));
      must(await c.send('setSettlementSigner', [hmm, true]));
    }
    const env = t.bound ? { [VC]: c.address } : {};
    const ts = () => BigInt(Math.floor(Date.now() / 1000));
    const row = (rows[name] = {});
    const put = (op, r) => { must(r); row[op] = { gas: r.gasUsed, execution: r.executionGas, calldata: r.calldataBytes }; };

    const signed = kms.signAttestation(attestationInput(ts(), { node_id: 'gas' }), { env });
    put('verify', await c.send('verify', [abi.attestation(signed.attestation), signed.signature]));

    const items = kms.signBatch(Array.from({ length: batchSize }, (_, i) => attestationInput(ts(), { node_id: `gas-${i}` })), { env });
    const item = items[batchSize - 1];
    put(`verifyBatchItem (batch of ${batchSize}, ${item.proof.length} steps)`, await c.send('verifyBatchItem', [
      abi.attestation(item.attestation), item.batch.root, BigInt(item.batch.count), BigInt(item.batch.timestamp), item.signature, BigInt(item.index), abi.proof(item.proof),
    ]));

    const att = kms.signAttestation(attestationInput(ts(), { node_id: 'gas-settle' }), { env });
    const st = kms.signSettlement(settlementInput(att.digest, ts()), { signed: att, env });
    put('settleWithAttestation', await c.send('settleWithAttestation', [abi.settlement(st.settlement), st.signature, abi.attestation(att.attestation), att.signature]));

    if (!t.baseline) {
      const [bi] = items.slice(0, 1);
      const st2 = kms.signSettlement(settlementInput(bi.digest, ts(), { job_id: 'gas-batch' }), { signed: bi, env });
      put('settleWithBatchItem', await c.send('settleWithBatchItem', [abi.settlement(st2.settlement), st2.signature, abi.attestation(bi.attestation), abi.batchProof(bi)]));
      const att3 = kms.signAttestation(attestationInput(ts(), { node_id: 'gas-record' }), { env });
      put('recordAttestation', await c.send('recordAttestation', [abi.attestation(att3.attestation), att3.signature]));
      const st3 = kms.signSettlement(settlementInput(att3.digest, ts(), { job_id: 'gas-recorded' }), { signed: att3, env });
      put('settle (attestation recorded earlier)', await c.send('settle', [abi.settlement(st3.settlement), st3.signature]));
    }
  }
  return { rows, batchSize };
}

/// The figures as a Markdown table (gas of the whole transaction, its execution part, calldata).
export function table({ rows }) {
  const lines = ['| contract | call | tx gas | execution gas | calldata bytes |', '|---|---|---:|---:|---:|'];
  for (const [name, ops] of Object.entries(rows)) {
    for (const [op, f] of Object.entries(ops)) lines.push(`| ${name} | ${op} | ${f.gas} | ${f.execution} | ${f.calldata} |`);
  }
  return lines.join('\n');
}

// Prints the gas and calldata figures of docs/benchmarks.md ("On-chain verification"):
//   cargo build -p hanzo-kms-cli && (cd contracts && node scripts/build.mjs && node scripts/bench.mjs)
// Gas is deterministic: the same build and inputs give the same figures on any machine.
import { Kms } from '../test/lib/kms.mjs';
import { measure, table } from '../test/lib/gas.mjs';
import { artifacts } from '../test/lib/evm.mjs';

const batchSize = Number(process.argv[2] ?? 1024);
const kms = Kms.create({ name: 'bench' });
const m = await measure(kms, { batchSize });
console.log(table(m));
const ours = m.rows['HMMSettlement (verifyingContract)'];
const base = m.rows['BaselineOZ (OpenZeppelin EIP712 + ECDSA)'];
console.log('\n| call | HMMSettlement / baseline (tx gas) | (execution gas) |\n|---|---:|---:|');
for (const op of Object.keys(base)) {
  console.log(`| ${op} | ${(Number(ours[op].gas) / Number(base[op].gas)).toFixed(3)} | ${(Number(ours[op].execution) / Number(base[op].execution)).toFixed(3)} |`);
}
const item = Object.keys(ours).find((k) => k.startsWith('verifyBatchItem'));
console.log(`\ncalldata: verify ${ours.verify.calldata} B, ${item} ${ours[item].calldata} B (${(ours[item].calldata / ours.verify.calldata).toFixed(2)}×)`);
const sizes = Object.fromEntries(Object.entries(artifacts()).map(([n, a]) => [n, (a.deployedBytecode.length - 2) / 2]));
console.log(`deployed bytecode: ${JSON.stringify(sizes)}`);

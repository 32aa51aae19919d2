// The same flow with keys inside a SoftHSM2 token (hsm-resident secp256k1 keys): hanzo-kms signs
// through PKCS#11, the contracts verify and settle. The token is made here with softhsm2-util in
// a throwaway token directory; without SoftHSM2 this test fails and says how to install it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Kms, tempDir, attestationInput, settlementInput, abi } from './lib/kms.mjs';
import { deploy, register, must, now } from './lib/setup.mjs';
import { highS } from './lib/tamper.mjs';

const MODULE = process.env.HANZO_SOFTHSM2_MODULE || '/usr/lib/softhsm/libsofthsm2.so';

/// A fresh token: {env, config} for a Kms on it.
function token() {
  if (!fs.existsSync(MODULE)) throw new Error(`${MODULE} is missing: apt-get install -y softhsm2 (scripts/test.sh installs it)`);
  const dir = tempDir('softhsm2');
  fs.mkdirSync(path.join(dir, 'tokens'));
  const conf = path.join(dir, 'softhsm2.conf');
  fs.writeFileSync(conf, `directories.tokendir = ${dir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  const pin = crypto.randomBytes(8).toString('hex');
  const label = `contracts-${process.pid}`;
  const r = spawnSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--so-pin', crypto.randomBytes(8).toString('hex'), '--pin', pin],
    { env: { ...process.env, SOFTHSM2_CONF: conf }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`softhsm2-util --init-token: ${r.error?.message ?? r.stderr}`);
  return {
    env: { SOFTHSM2_CONF: conf, CONTRACTS_HSM_PIN: pin },
    config: `kms:\n  lux:\n    provider: softhsm2\n    softhsm2:\n      module: ${MODULE}\n      token_label: ${label}\n      pin_env: CONTRACTS_HSM_PIN\n      max_sessions: 2\n`,
  };
}

test('SoftHSM2 keys: attestation, batch item and settlement on the EVM', async () => {
  const t = token();
  const kms = Kms.create({ name: 'hsm', config: t.config, env: t.env });
  for (const key of ['poai:acme:gpt4', 'hmm:acme:gpt4']) {
    const show = kms.show(key);
    assert.equal(show.origin, 'hsm-resident', key);
    assert.equal(show.provider, 'softhsm2', key);
  }
  const d = await deploy();
  const { poaiAddress, hmmAddress } = await register(d, kms);

  const signed = kms.signAttestation(attestationInput(now()));
  assert.equal(signed.signer, poaiAddress);
  const a = abi.attestation(signed.attestation);
  assert.deepEqual([...must(await d.verifier.call('verify', [a, signed.signature])).result], [signed.digest, poaiAddress]);
  // The token's signature is normalised to low-S; its twin is refused.
  assert.equal((await d.verifier.call('verify', [a, highS(signed.signature)])).error?.name, 'SignatureSInvalid');

  const items = kms.signBatch([0, 1, 2].map((i) => attestationInput(now(), { node_id: `hsm-${i}` })));
  for (const item of items) must(await d.verifier.call('verifyBatchProof', [abi.attestation(item.attestation), abi.batchProof(item)]));

  const settled = kms.signSettlement(settlementInput(signed.digest, now()), { signed });
  assert.equal(settled.signer, hmmAddress);
  const tx = must(await d.settlement.send('settleWithAttestation', [abi.settlement(settled.settlement), settled.signature, a, signed.signature]));
  assert.equal(tx.events[0].name, 'Settled');
  assert.equal(tx.events[0].args.settlementDigest, settled.digest);
  assert.equal(tx.events[0].args.signer, hmmAddress);
  const again = await d.settlement.send('settleWithAttestation', [abi.settlement(settled.settlement), settled.signature, a, signed.signature]);
  assert.equal(again.error?.name, 'AlreadySettled');
});

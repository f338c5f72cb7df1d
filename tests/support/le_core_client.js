#!/usr/bin/env node
// A legacy ACME v1 client for the matrix: le-acme-core (the v1 core of
// node-letsencrypt and greenlock 2.x) or letiny-core (the fork of letiny it
// came from; the same getCertificate interface), driven the way those
// libraries drove it, for an account that already exists (no registration):
// getAcmeUrls(directory), then getCertificate() -- new-authz, http-01 file,
// challenge, poll, new-cert, a GET of the certificate URL compared with the
// new-cert body, and the issuer through Link rel="up".
//
//   NODE_PATH=<prefix>/node_modules node le_core_client.js \
//       le-acme-core|letiny-core DIRECTORY ACCOUNT_KEY_PEM NAME CHALLENGE_DIR OUT_DIR
//
// Writes OUT_DIR/cert.pem, chain.pem, privkey.pem; exits 1 with the error
// on stderr when anything fails.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const [library, directory, accountKeyPath, name, challengeDir, outDir] = process.argv.slice(2);
if (!outDir || !['le-acme-core', 'letiny-core'].includes(library)) {
  console.error('usage: le_core_client.js le-acme-core|letiny-core DIRECTORY ACCOUNT_KEY_PEM NAME CHALLENGE_DIR OUT_DIR');
  process.exit(2);
}

// le-acme-core exports a factory; letiny-core exports the ready core.
const exported = require(library);
const LeCore = exported.ACME ? exported.ACME.create() : exported;
const RSA = require('rsa-compat').RSA;

function fail(err) {
  console.error(library + ' failed:', err && (err.stack || err.message || err));
  if (err && err.description) console.error('detail:', JSON.stringify(err.description));
  process.exit(1);
}

const accountKeypair = RSA.import({ privateKeyPem: fs.readFileSync(accountKeyPath, 'ascii') });
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const domainKeypair = RSA.import({
  privateKeyPem: privateKey.export({ type: 'pkcs1', format: 'pem' }),
});

LeCore.getAcmeUrls(directory, (err, urls) => {
  if (err) return fail(err);
  LeCore.getCertificate({
    newAuthzUrl: urls.newAuthz,
    newCertUrl: urls.newCert,
    accountKeypair,
    domainKeypair,
    domains: [name],
    challengeType: 'http-01',
    setChallenge(hostname, token, keyAuthorization, done) {
      fs.writeFileSync(path.join(challengeDir, token), keyAuthorization);
      done(null);
    },
    removeChallenge(hostname, token, done) {
      fs.rmSync(path.join(challengeDir, token), { force: true });
      done(null);
    },
  }, (err, certs) => {
    if (err) return fail(err);
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(path.join(outDir, 'cert.pem'), certs.cert);
    fs.writeFileSync(path.join(outDir, 'chain.pem'), certs.chain);
    fs.writeFileSync(path.join(outDir, 'privkey.pem'), certs.privkey, { mode: 0o600 });
    console.log('certificate for', name, 'in', outDir);
  });
});

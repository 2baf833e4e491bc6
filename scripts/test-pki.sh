#!/bin/sh
# A private CA (ca.pem, ca.key) and a certificate for localhost signed by it (cert.pem, key.pem; for
# the name localhost only), made with openssl in the directory $1, as an operator's PKI would issue
# them. For the TLS tests (PostgreSQL, Kafka, check-in); the keys never leave that directory.
set -e
cd "$1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=test-ca \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout key.pem -out leaf.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' >leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
  -extfile leaf.ext -out cert.pem 2>/dev/null

#!/usr/bin/env bash
# Make the secrets of docker-compose.cluster.yml in deploy/secrets/ (or $SECRETS_DIR): a CA of
# your own, one certificate for the Kafka nodes signed by it (kafka-1..3 and any names or IPs
# given as arguments, e.g. DNS:kafka.example.org IP:10.0.0.5, so clients can check the host
# they connect to), and a random password per Kafka user. Existing files are kept, so running
# it again never changes a password or a certificate that clients already trust.
#
#   deploy/kafka-secrets.sh DNS:kafka.example.org
set -euo pipefail

dir=${SECRETS_DIR:-$(dirname "$0")/secrets}
umask 077
mkdir -p "$dir"
cd "$dir"

for user in collector lake_writer alerts; do
  [[ -s kafka_${user}_password ]] || openssl rand -hex 24 > "kafka_${user}_password"
done

if [[ ! -s kafka_ca.pem ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=sysmetrics Kafka CA" -keyout kafka_ca.key -out kafka_ca.pem 2> /dev/null
fi
if [[ ! -s kafka_server.pem ]]; then
  names="DNS:kafka-1,DNS:kafka-2,DNS:kafka-3"
  for extra in "$@"; do names="$names,$extra"; done
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kafka" \
    -keyout server.key -out server.csr 2> /dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    "$names" > server.ext
  openssl x509 -req -in server.csr -CA kafka_ca.pem -CAkey kafka_ca.key -CAcreateserial \
    -days 825 -extfile server.ext -out server.crt 2> /dev/null
  # Kafka's PEM key store: the unencrypted PKCS#8 key, then the certificate.
  cat server.key server.crt > kafka_server.pem
  rm -f server.key server.csr server.ext server.crt kafka_ca.srl
fi
# The containers run as other users: the files they mount are readable, in a folder only you
# can open; the CA's key stays yours alone.
chmod 644 kafka_* && chmod 600 kafka_ca.key
echo "secrets in $PWD: kafka_ca.pem (give it to clients), kafka_server.pem, kafka_*_password"

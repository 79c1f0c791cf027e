#!/usr/bin/env bash
# Create what sysmetrics needs on a secured Kafka cluster, once, as a super user: the topics
# (replicated), SCRAM-SHA-512 users for the collector, the lake writer and the alert evaluator,
# and ACLs that give each exactly its job (the collector writes the topic; the lake writer and
# the evaluator read it and use groups named after their defaults; the evaluator also keeps its
# state topic). Safe to run again.
#
#   BOOTSTRAP=kafka-1:19092 SECRETS_DIR=/run/secrets deploy/kafka-setup.sh
#
# BOOTSTRAP    an admin listener of the cluster
# ADMIN_CONFIG client properties for that listener (e.g. SASL_SSL as a super user); unset on a
#              listener whose connections are already trusted (the compose file's INTERNAL one)
# SECRETS_DIR  holds kafka_collector_password, kafka_lake_writer_password, kafka_alerts_password
# KAFKA_BIN    Kafka's bin folder (default /opt/kafka/bin, as in the apache/kafka image)
# TOPIC, PARTITIONS, REPLICATION_FACTOR, MIN_INSYNC_REPLICAS: defaults machine_metrics, 6, 3, 2
# STATE_TOPIC  the evaluator's (SYSMETRICS_ALERT_STATE_TOPIC), default sysmetrics-alert-state
set -euo pipefail

: "${BOOTSTRAP:?set BOOTSTRAP to an admin listener, e.g. kafka-1:19092}"
KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}
SECRETS_DIR=${SECRETS_DIR:-/run/secrets}
TOPIC=${TOPIC:-machine_metrics}
STATE_TOPIC=${STATE_TOPIC:-sysmetrics-alert-state}
admin=(--bootstrap-server "$BOOTSTRAP")
if [[ -n "${ADMIN_CONFIG:-}" ]]; then
  admin+=(--command-config "$ADMIN_CONFIG")
fi

topic() {
  "$KAFKA_BIN/kafka-topics.sh" "${admin[@]}" --create --if-not-exists \
    --replication-factor "${REPLICATION_FACTOR:-3}" \
    --config "min.insync.replicas=${MIN_INSYNC_REPLICAS:-2}" "$@"
}
# Log-append time: the lake writer measures each host's clock skew against the broker's clock.
topic --topic "$TOPIC" --partitions "${PARTITIONS:-6}" --config message.timestamp.type=LogAppendTime
topic --topic "$STATE_TOPIC" --partitions 1 --config cleanup.policy=compact

# Passwords go through a private file, never the command line (other users can read that).
scram=$(mktemp)
trap 'rm -f "$scram"' EXIT
for user in collector lake_writer alerts; do
  secret="$SECRETS_DIR/kafka_${user}_password"
  [[ -s "$secret" ]] || { echo "missing $secret: put the password of Kafka user ${user//_/-} there" >&2; exit 2; }
  # (In a file the value has no brackets: kafka-configs strips them only on the command line.)
  printf 'SCRAM-SHA-512=iterations=8192,password=%s\n' "$(tr -d '\r\n' < "$secret")" > "$scram"
  "$KAFKA_BIN/kafka-configs.sh" "${admin[@]}" --alter --entity-type users \
    --entity-name "${user//_/-}" --add-config-file "$scram" > /dev/null
  echo "user ${user//_/-}: SCRAM-SHA-512 credentials set"
done

acl() { "$KAFKA_BIN/kafka-acls.sh" "${admin[@]}" --add --force "$@" > /dev/null; }
acl --allow-principal User:collector --operation Write --operation Describe --topic "$TOPIC"
for reader in lake-writer:sysmetrics-lake-writer alerts:sysmetrics-alerts; do
  acl --allow-principal "User:${reader%%:*}" --operation Read --operation Describe --topic "$TOPIC"
  acl --allow-principal "User:${reader%%:*}" --operation Read \
    --group "${reader#*:}" --resource-pattern-type prefixed
done
acl --allow-principal User:alerts --operation Read --operation Write --operation Describe \
  --topic "$STATE_TOPIC"
echo "ACLs: collector writes $TOPIC; lake-writer and alerts read it with their groups;" \
  "alerts keeps $STATE_TOPIC"

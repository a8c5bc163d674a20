#!/bin/sh
# Health probe of particle-broker: a retained message published and read back over the TLS
# listener with the probe's own credentials, so "healthy" means TLS, authentication, the
# dynamic-security roles and message delivery all work (not merely that the port is open).
#
#   broker-healthcheck                 the probe (the image's HEALTHCHECK)
#   broker-healthcheck ID [ID ...]     instead, wait until each worker ID has a retained
#                                      "online" status (Ansible's registration check)
#
# The broker binds every credential to one client id (simctl/broker_security.py): the probe
# connects as user healthcheck with id particle-broker-health (Docker never runs two probes
# of one container at once), the check of worker ID as user healthcheck.ID with id
# particle-broker-registration-ID (Ansible checks several workers at once), both with the
# probe's password. The probe's topic, particle-broker/health, is HEALTH_TOPIC there.
#
# Topics are spelled out here because the image has no Python to ask simproto.protocol;
# tests/deploy/test_broker_config.py::test_health_probe_topics_are_the_protocols fails when
# a -t below (or the default prefix) differs from Topics(...) and HEALTH_TOPIC.
#
# Settings come from the container's environment (BROKER_PROBE_HOST, BROKER_PROBE_PORT,
# BROKER_TOPIC_PREFIX) and the mounted files ca.crt and healthcheck.password.
set -eu
conf=/etc/particle-broker
host=${BROKER_PROBE_HOST:?BROKER_PROBE_HOST is not set}
port=${BROKER_PROBE_PORT:-8883}
# The default is simproto.protocol.DEFAULT_TOPIC_PREFIX (guarded by the test named above).
prefix=${BROKER_TOPIC_PREFIX:-sim}
password=$(cat "$conf/healthcheck.password")

mqtt() {
    tool=$1
    user=$2
    client_id=$3
    shift 3
    "mosquitto_$tool" -h "$host" -p "$port" --cafile "$conf/ca.crt" -u "$user" \
        -i "$client_id" -P "$password" -V mqttv5 "$@"
}

if [ $# -eq 0 ]; then
    stamp="probe-$(date +%s)-$$"
    # HEALTH_TOPIC of simctl/broker_security.py (test_health_probe_topics_are_the_protocols).
    mqtt pub healthcheck particle-broker-health -t particle-broker/health -m "$stamp" -r -q 1
    seen=$(mqtt sub healthcheck particle-broker-health -t particle-broker/health -C 1 -W 5 -q 1)
    if [ "$seen" != "$stamp" ]; then
        echo "probe message not received back (got '$seen')" >&2
        exit 1
    fi
fi

for worker_id in "$@"; do
    # The worker's retained status; a JSON object with "state": "online" once it registered.
    # Topics(prefix).worker(id, Channel.STATUS) and WorkerStatus's encoding of the state
    # (test_health_probe_topics_are_the_protocols).
    status=$(mqtt sub "healthcheck.$worker_id" "particle-broker-registration-$worker_id" \
        -t "$prefix/workers/$worker_id/status" -C 1 -W 5 || true)
    case $status in
        *'"state":"online"'* | *'"state": "online"'*) ;;
        *) echo "worker $worker_id has not registered (status: ${status:-none})" >&2; exit 1 ;;
    esac
done
echo "healthy"

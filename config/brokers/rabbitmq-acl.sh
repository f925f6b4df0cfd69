#!/bin/sh
# egate topic permissions for RabbitMQ's MQTT plugin (run on any cluster node, once per user).
# RabbitMQ matches topics with "/" turned into "." and substitutes {username}, so gates log in
# with the user name "<site>.<gate>" and may only publish their own uplink topics and read their
# own bundle and command topics under egate/v1/<site>/<gate>/.
#
#   rabbitmq-acl.sh gate  site-a.gate-07  PASSWORD
#   rabbitmq-acl.sh ops   egate-ops       PASSWORD
# Change PREFIX if the gates use another link.topic_prefix ("egate/v1" -> "egate\.v1").
set -eu
PREFIX='egate\.v1'
CTL=${RABBITMQCTL:-rabbitmqctl}
role=$1 user=$2 password=$3
$CTL add_user "$user" "$password"
$CTL set_permissions -p / "$user" '.*' '.*' '.*'
if [ "$role" = ops ]; then
    $CTL set_topic_permissions -p / "$user" amq.topic "^${PREFIX}\." "^${PREFIX}\."
else
    $CTL set_topic_permissions -p / "$user" amq.topic \
        "^${PREFIX}\.{username}\.(status|outcome|event|health|bundle\.ack|cmd\.ack)\$" \
        "^${PREFIX}\.{username}\.(bundle\.\*|cmd)\$"
fi

# Consul ACL policy "stagesub-prometheus" for Prometheus (consul_sd_configs
# in deploy/prometheus/prometheus.yml) and the `stagesubctl prometheus-sd`
# bridge.
#
#   consul acl policy create -name stagesub-prometheus -rules @deploy/consul-acl/prometheus.hcl
#   consul acl token create -description "prometheus on $(hostname)" -policy-name stagesub-prometheus
#
# Give the token to Prometheus as `token` in every consul_sd_configs entry
# (deploy/prometheus.Options.ConsulToken renders it) or to the bridge as
# CONSUL_HTTP_TOKEN. Read only; no KV at all.

# consul_sd with a fixed list of services asks /v1/health/service/<name> for
# each StageSub service (the bridge does the same).
service_prefix "stagesub-" {
  policy = "read"
}

# Health answers carry each instance's node; without node read they are
# filtered out.
node_prefix "" {
  policy = "read"
}

# consul_sd reads /v1/agent/self once to learn the datacenter when the
# configuration names none (ours does not). The bridge does not need it.
agent_prefix "" {
  policy = "read"
}

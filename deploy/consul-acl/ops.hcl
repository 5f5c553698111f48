# Consul ACL policy "stagesub-ops" for stagesubctl (people and CI running ops).
#
#   consul acl policy create -name stagesub-ops -rules @deploy/consul-acl/ops.hcl
#
# Ops create, change and delete tenant records, take the per-tenant create
# locks, read every StageSub service's health (doctor, deploy waits) and may
# register or deregister app instances on behalf of a deploy target. Ops
# cannot touch the routers' certificates or anything outside stagesub/.
key_prefix "stagesub/tenants/" {
  policy = "write"
}

key_prefix "stagesub/locks/" {
  policy = "write"
}

session_prefix "" {
  policy = "write"
}

service "stagesub-app" {
  policy = "write"
}

service "stagesub-router" {
  policy = "read"
}

service "stagesub-admin" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

# `consul operator`-style reads for stagesubctl doctor (leader, peers).
operator = "read"

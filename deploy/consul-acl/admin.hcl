# Consul ACL policy "stagesub-admin" for the superadmin dashboard.
#
#   consul acl policy create -name stagesub-admin -rules @deploy/consul-acl/admin.hcl
#
# The admin lists tenants and their instances' health, and registers itself.
# It never writes tenant records: changes go through stagesubctl (ops).
key_prefix "stagesub/tenants/" {
  policy = "read"
}

service "stagesub-app" {
  policy = "read"
}

service "stagesub-router" {
  policy = "read"
}

service "stagesub-admin" {
  policy = "write"
}

node_prefix "" {
  policy = "read"
}

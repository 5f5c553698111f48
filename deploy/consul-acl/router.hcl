# Consul ACL policy "stagesub-router" for every stagesub-router replica.
#
#   consul acl policy create -name stagesub-router -rules @deploy/consul-acl/router.hcl
#   consul acl token create -description "router on $(hostname)" -policy-name stagesub-router
#
# The router reads tenant records and the health of app and admin instances
# (blocking queries), registers itself, and shares ACME certificates and
# their locks with the other replicas under stagesub/certmagic/.

# Tenant records: read only. Only ops write them.
key_prefix "stagesub/tenants/" {
  policy = "read"
}

# certmagic storage shared by all replicas (certificates, ACME account, locks).
key_prefix "stagesub/certmagic/" {
  policy = "write"
}

# certmagic's Consul locks hold a session on the router's node.
session_prefix "" {
  policy = "write"
}

# Health of tenant app instances and of the admin: read only.
service "stagesub-app" {
  policy = "read"
}

service "stagesub-admin" {
  policy = "read"
}

# Its own registration (so Prometheus finds it).
service "stagesub-router" {
  policy = "write"
}

# Health queries return node information for every instance.
node_prefix "" {
  policy = "read"
}

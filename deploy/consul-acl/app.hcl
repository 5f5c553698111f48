# Consul ACL policy "stagesub-app" for tenant app instances.
#
#   consul acl policy create -name stagesub-app -rules @deploy/consul-acl/app.hcl
#
# An app instance only registers itself (service stagesub-app with its HTTP
# check) with the local agent and deregisters on shutdown. It reads no KV:
# its tenant and database come from its own environment, and it learns
# nothing about other tenants from Consul.
service "stagesub-app" {
  policy = "write"
}

# The agent's registration endpoint checks the node the check runs on.
node_prefix "" {
  policy = "read"
}

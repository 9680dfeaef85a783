-- Argo CD health check for bootstrap.tlsbootstrap.io/BootstrapPolicy.
--
-- Argo CD runs custom health checks without Lua's standard libraries (no string.*),
-- so this sticks to the base library and the .. operator.
--
--   Progressing  the operator has not reported on the current generation yet, or is
--                still working on it (a retried error, a token being minted)
--   Degraded     the operator reported a failure that only a change by a human fixes:
--                Stalled=True (an invalid spec admission did not catch), or a missing
--                CA for the bootstrap kubeconfig (CANotFound; it turns Healthy by
--                itself once the CA appears, the operator looks again every 30s)
--   Healthy      Ready=True for the current generation
local hs = {status = "Progressing", message = "Waiting for the operator to report on the policy"}

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local ready = nil
local stalled = nil
local terminal = nil
for _, c in ipairs(obj.status.conditions) do
  local current = c.observedGeneration ~= nil and c.observedGeneration >= generation
  if c.type == "Ready" then
    ready = c
  elseif c.type == "Stalled" and c.status == "True" and current then
    stalled = c
  elseif c.status == "False" and c.reason == "CANotFound" and current then
    terminal = c
  end
end

-- A condition written for an older generation says nothing about the spec in Git.
if ready == nil or ready.observedGeneration == nil or ready.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

if stalled ~= nil then
  hs.status = "Degraded"
  hs.message = "Stalled (" .. stalled.reason .. "): " .. stalled.message
  return hs
end
if ready.status == "False" and ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = "InvalidSpec: " .. ready.message
  return hs
end
if terminal ~= nil then
  hs.status = "Degraded"
  hs.message = terminal.type .. " (" .. terminal.reason .. "): " .. terminal.message
  return hs
end

-- The operator bumps status.observedGeneration only once it handled the spec.
local observed = obj.status.observedGeneration
if observed == nil or observed < generation then
  hs.message = "Reconciling generation " .. generation .. ": " .. ready.message
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
hs.message = "Ready=" .. ready.status .. " (" .. ready.reason .. "): " .. ready.message
return hs

-- Argo CD health of a Portcullis AuthRule, from the conditions its controller writes.
-- Healthy: Ready is True and the provider has been checked. Progressing: no status yet,
-- the controller has not read the latest spec (observedGeneration behind
-- metadata.generation), or the provider has not been checked yet. Degraded: a condition
-- is False; the message names it, with the controller's reason and fix.
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Portcullis controller to report on this AuthRule"
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = string.format("The controller has read generation %d of %d", observed, generation)
  return hs
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  if condition.type ~= nil then
    conditions[condition.type] = condition
  end
end
for _, kind in ipairs({"Accepted", "ResolvedRefs", "CredentialsAccepted", "IdPReachable", "Ready"}) do
  local condition = conditions[kind]
  if condition ~= nil and condition.status == "False" then
    hs.status = "Degraded"
    hs.message = kind .. " is False (" .. (condition.reason or "") .. "): " .. (condition.message or "")
    return hs
  end
end
local ready = conditions["Ready"]
if ready == nil or ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if conditions["IdPReachable"] == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to check the identity provider"
  return hs
end
hs.status = "Healthy"
hs.message = ready.message or "Ready"
return hs

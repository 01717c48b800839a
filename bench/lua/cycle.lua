-- Create + close cycle. Each thread owns some slots (a user's Bearer token and a placement):
-- a slot is busy from its POST /api/codex/sessions until the close of that session answers,
-- so no two requests ever race for the same (user, placement, agent) and no 409 is expected.
-- The slot number rides in the session's metadata: wrk does not say which request a response
-- answers, but both answers (201 SESSION, 200 SESSION) echo the metadata back.
-- File lines (first argument): TOKEN <tab> PLACEMENT <tab> AGENT_ID; the second argument is
-- the number of threads, and thread i takes every line whose index is i modulo that number;
-- the third is the User-Agent to send.
dofile("report.lua")

local slots = {}
local free = {}
local closing = {}
local next_thread = 0  -- main state only; each thread gets its own `thread_id` global
local threads = {}
starved = 0

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
  threads[#threads + 1] = thread
end

function init(args)
  local count = tonumber(args[2])
  user_agent = args[3]
  local line_number = 0
  for line in io.lines(args[1]) do
    if line ~= "" then
      if line_number % count == thread_id then
        local token, placement, agent = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)$")
        slots[#slots + 1] = {
          auth = "Bearer " .. token,
          body = string.format(
            '{"placement": "%s", "agent_id": "%s", "metadata": {"bench_slot": %d}}',
            placement, agent, #slots + 1),
        }
        free[#free + 1] = #slots
      end
      line_number = line_number + 1
    end
  end
end

function request()
  local job = table.remove(closing)
  if job then
    return wrk.format("POST", "/api/codex/sessions/" .. job.id .. "/close",
      { Authorization = slots[job.slot].auth, ["User-Agent"] = user_agent })
  end
  local slot = table.remove(free)
  if slot == nil then
    -- More requests in flight than slots: should not happen (two slots per connection).
    starved = starved + 1
    return wrk.format("GET", "/healthz", { ["User-Agent"] = user_agent })
  end
  return wrk.format("POST", "/api/codex/sessions",
    { Authorization = slots[slot].auth, ["Content-Type"] = "application/json",
      ["User-Agent"] = user_agent },
    slots[slot].body)
end

function response(status, headers, body)
  local slot = tonumber(body:match('"bench_slot":%s*(%d+)'))
  if slot == nil then return end
  if status == 201 then
    closing[#closing + 1] = { slot = slot, id = body:match('"session_id":%s*"([^"]+)"') }
  elseif status == 200 then
    free[#free + 1] = slot
  end
end

local report_done = done
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + (thread:get("starved") or 0)
  end
  io.write(string.format('WRK_STARVED %d\n', total))
  report_done(summary, latency, requests)
end

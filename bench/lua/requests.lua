-- Round-robin over prepared requests, one per line of the file named by the first argument:
--   METHOD <tab> PATH <tab> BODY (or empty) [<tab> HEADER-NAME <tab> HEADER-VALUE]...
-- Every request is formatted once in init(), so the per-request cost in wrk is one table read,
-- the same for the baseline and for codexweb.
dofile("report.lua")

local prepared = {}
local position = 0
local next_thread = 0  -- main state only; each thread gets its own `thread_id` global

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

local function split_tabs(line)
  local fields = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    fields[#fields + 1] = field
  end
  return fields
end

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then
      local fields = split_tabs(line)
      local headers = {}
      for i = 4, #fields - 1, 2 do
        headers[fields[i]] = fields[i + 1]
      end
      local body = fields[3]
      if body == "" then body = nil end
      prepared[#prepared + 1] = wrk.format(fields[1], fields[2], headers, body)
    end
  end
  -- Threads start at different points so they do not walk the same users in step.
  position = (thread_id * 7919) % #prepared
end

function request()
  position = position % #prepared + 1
  return prepared[position]
end

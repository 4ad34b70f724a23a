-- POST the file named by BODY_FILE to each path of PATHS (space separated) in turn, with
-- HOST_HEADER as the Host when it is set: a client making its calls one after another.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()
local paths = {}
for path in string.gmatch(os.getenv("PATHS"), "%S+") do
  table.insert(paths, path)
end
local headers = { ["Content-Type"] = "application/json" }
local host = os.getenv("HOST_HEADER")
if host and host ~= "" then
  headers["Host"] = host
end
local next_path = 0

request = function()
  next_path = next_path % #paths + 1
  return wrk.format("POST", paths[next_path], headers, body)
end

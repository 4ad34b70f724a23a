-- POST the file named by BODY_FILE; BODY_HEADER, when set, is the binary extension's
-- Inference-Header-Content-Length (the JSON part's size).
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
local header = os.getenv("BODY_HEADER")
if header and header ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header
  wrk.headers["Content-Type"] = "application/octet-stream"
else
  wrk.headers["Content-Type"] = "application/json"
end

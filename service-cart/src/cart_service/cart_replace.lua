-- Replace a cart document only if it is still the one read (compare and set): a saga event's
-- change, computed from that read, lands only on the document it was computed from.
-- KEYS[1]: the cart's key. ARGV[1]: the document as read ('' when there was none);
-- ARGV[2]: the new document; ARGV[3]: the key's expiry, seconds.
-- Returns 1 when written, 0 when the document changed since it was read (read it again).
local current = redis.call('GET', KEYS[1])
if (current or '') ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1

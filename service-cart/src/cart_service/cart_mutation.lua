-- One atomic change a shopper makes to a cart document (the same JSON shape the Couchbase store
-- keeps). Mirrors the rules of cart_service/domain.py; the contract tests run both stores against
-- them. Fields of the document it does not know (the chassis inbox) are kept as they are.
-- KEYS[1]: the cart key.
-- ARGV: op, ttl_seconds, user_id, then per op:
--   add / set:       product_id, quantity, stock, currency, now_ms, max_line_quantity, max_lines
--   remove:          product_id
--   clear:           (nothing)
-- Returns {'ok', document} after a write, {'unchanged', document} when nothing was written,
-- or {violation_code, quantity} when a rule refused the change.

local key = KEYS[1]
local op, ttl, user_id = ARGV[1], tonumber(ARGV[2]), ARGV[3]

local raw = redis.call('GET', key)
local doc
if raw then
  doc = cjson.decode(raw)
else
  doc = {user_id = user_id, currency = '', lines = {}}
end

local function find(product_id)
  for i, line in ipairs(doc.lines) do
    if line.product_id == product_id then
      return i
    end
  end
  return nil
end

local function save()
  if #doc.lines == 0 then
    doc.currency = ''
  end
  local encoded = cjson.encode(doc)
  redis.call('SET', key, encoded, 'EX', ttl)
  return {'ok', encoded}
end

local function put_line(product_id, quantity)
  local stock, currency, now_ms = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
  local max_quantity, max_lines = tonumber(ARGV[9]), tonumber(ARGV[10])
  local i = find(product_id)
  if quantity > max_quantity then
    return {'too_many_units', quantity}
  end
  if quantity > stock then
    return {'not_enough_stock', quantity}
  end
  if not i and #doc.lines >= max_lines then
    return {'too_many_lines', quantity}
  end
  if #doc.lines > 0 and doc.currency ~= '' and doc.currency ~= currency then
    return {'currency_mismatch', quantity}
  end
  if i then
    doc.lines[i].quantity = quantity
  else
    table.insert(doc.lines, {product_id = product_id, quantity = quantity, added_at_ms = now_ms})
  end
  doc.currency = currency
  return save()
end

if op == 'add' then
  local product_id, quantity = ARGV[4], tonumber(ARGV[5])
  local i = find(product_id)
  if i then
    quantity = quantity + doc.lines[i].quantity
  end
  return put_line(product_id, quantity)
elseif op == 'set' then
  return put_line(ARGV[4], tonumber(ARGV[5]))
elseif op == 'remove' then
  local i = find(ARGV[4])
  if not i then
    return {'line_not_found', 0}
  end
  table.remove(doc.lines, i)
  return save()
elseif op == 'clear' then
  if not raw then
    return {'unchanged', ''}
  end
  doc.lines = {}
  return save()
end
return redis.error_reply('unknown cart operation ' .. tostring(op))

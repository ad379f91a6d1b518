-- Small statistics shared by the benches.
local M = {};

-- The p-quantile (0 < p <= 1) of samples, which it sorts; NaN when empty.
function M.percentile(samples, p)
	if #samples == 0 then
		return 0 / 0;
	end
	table.sort(samples);
	return samples[math.max(1, math.ceil(#samples * p))];
end

return M;

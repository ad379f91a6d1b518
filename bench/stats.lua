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

-- The median of samples (the mean of the middle two for an even count).
function M.median(samples)
	local n = #samples;
	if n == 0 then
		return 0 / 0;
	end
	table.sort(samples);
	local mid = n // 2;
	return n % 2 == 1 and samples[mid + 1] or (samples[mid] + samples[mid + 1]) / 2;
end

return M;

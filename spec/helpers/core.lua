-- Loads this checkout's C extension (build/cproxy/core.so) for specs.
package.cpath = "./build/?.so;" .. package.cpath;
return require "cproxy.core";

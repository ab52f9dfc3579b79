"""Where recordings and what is derived from them are kept: the interface (``base``) and its
local implementation (``local``). A shared store (object storage) would be a third module here."""

"""fedtumor/run"""

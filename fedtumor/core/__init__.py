"""fedtumor/core"""

"""fedtumor/federation"""

"""fedtumor/security"""
